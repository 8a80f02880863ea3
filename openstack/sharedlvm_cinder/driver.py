# Copyright 2026 The sharedlvm-operator Authors.
#
#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.
"""Cinder volume driver for shared LVM managed by sharedlvm-operator.

The volumes live in shared VGs (lvmlockd + sanlock) that every hypervisor
sees; hosts open /dev/VG/LV directly (driver_volume_type 'local', no iSCSI).
The driver never runs LVM or sanlock itself: each Cinder call becomes one
write of a sharedlvm.io custom resource (SharedVolume, VolumeAttachment) and a
watch on its status; the operator plans the sanlock lock of every node and
each node's agent applies it.

One Cinder backend serves several VolumeGroups, one pool each: volume types
pin a pool with the extra spec pool_name, and migrate/retype between pools of
the backend is a change of the SharedVolume's spec.volumeGroup.
"""

import functools
import math
import os
import re
import socket
import time

from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import units

from cinder import context as cinder_context
from cinder import exception
from cinder.i18n import _
from cinder import interface
from cinder.volume import configuration
from cinder.volume import driver
from cinder.volume import volume_utils

from sharedlvm_cinder import kube

LOG = logging.getLogger(__name__)

sharedlvm_opts = [
    cfg.StrOpt('sharedlvm_kubeconfig',
               default='',
               help='kubeconfig file for the Kubernetes API that runs '
                    'sharedlvm-operator; empty uses the pod\'s service '
                    'account (in-cluster).'),
    cfg.StrOpt('sharedlvm_kube_context',
               default='',
               help='Context of sharedlvm_kubeconfig to use; empty uses '
                    'its current context.'),
    cfg.StrOpt('sharedlvm_namespace',
               default='openstack',
               help='Namespace of the SharedVolumes and VolumeAttachments '
                    'this backend creates.'),
    cfg.ListOpt('sharedlvm_volume_groups',
                default=[],
                help='VolumeGroups (sharedlvm.io) this backend serves, one '
                     'Cinder pool each. Empty serves every VolumeGroup.'),
    cfg.DictOpt('sharedlvm_host_map',
                default={},
                help='Kubernetes node name of each Cinder/Nova host whose '
                     'name differs from its node (connector host:node).'),
    cfg.StrOpt('sharedlvm_node_name',
               default='',
               help='Kubernetes node this cinder-volume runs on, where its '
                    'own copies (image <-> volume, generic migration) '
                    'attach volumes. Empty: the NODE_NAME environment '
                    'variable (downward API), else the host name.'),
    cfg.IntOpt('sharedlvm_volume_timeout',
               default=600,
               help='Seconds to wait for a volume to be created, copied, '
                    'extended, migrated or deleted.'),
    cfg.IntOpt('sharedlvm_attach_timeout',
               default=50,
               help='Seconds to wait for a node to hold the lock of an '
                    'attached volume (or to release it on detach); keep it '
                    'below rpc_response_timeout.'),
]

CONF = cfg.CONF
CONF.register_opts(sharedlvm_opts, group=configuration.SHARED_CONF_GROUP)

# Reasons after which waiting longer cannot help: the driver fails the Cinder
# call at once with the CR's reason and message.
TERMINAL_VOLUME_REASONS = frozenset([
    'SourceLargerThanVolume', 'SourceNotFound', 'VolumeGroupNotFound',
    'VolumeGroupConflict', 'MigrationNeedsDetach', 'InsufficientSpace',
    'InvalidName', 'AlreadyExists', 'InvalidNodeSelector', 'LVNotFound',
])
TERMINAL_ATTACH_REASONS = frozenset([
    'MultiAttachNotAllowed', 'VolumeDeleting', 'VolumeNotFound',
])

# LVM's LV name charset (lvm.8: VG/LV names).
LV_NAME = re.compile(r'^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,62}$')

# Volume metadata keys the driver maintains: the volume's lock as sanlock
# holds it after the last attach/detach (shown by `openstack volume show`).
META_LOCK = 'sharedlvm_lock'
META_HOLDERS = 'sharedlvm_holders'


def _gib(quantity):
    """GiB (float) of a Kubernetes quantity string such as '100Gi'."""
    if not quantity:
        return 0.0
    q = str(quantity)
    suffixes = [('Ki', units.Ki), ('Mi', units.Mi), ('Gi', units.Gi),
                ('Ti', units.Ti), ('Pi', units.Pi), ('k', 1000),
                ('M', 1000 ** 2), ('G', 1000 ** 3), ('T', 1000 ** 4)]
    for s, mult in suffixes:
        if q.endswith(s):
            return float(q[:-len(s)]) * mult / units.Gi
    return float(q) / units.Gi


def _timed(fn):
    """Logs how long each Cinder call spent in the driver (the tier's
    timing table compares it with the same work done on the CRs directly)."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        t0 = time.monotonic()
        ok = False
        try:
            result = fn(self, *args, **kwargs)
            ok = True
            return result
        finally:
            target = next((a for a in args if hasattr(a, 'id')), None)
            LOG.info('sharedlvm-timing call=%(call)s id=%(id)s '
                     'seconds=%(s).3f ok=%(ok)s',
                     {'call': fn.__name__, 'id': getattr(target, 'id', '-'),
                      's': time.monotonic() - t0, 'ok': ok})
    return wrapper


class CRFailed(exception.VolumeBackendAPIException):
    message = _("%(kind)s %(name)s: %(reason)s: %(detail)s")


@interface.volumedriver
class SharedLVMDriver(driver.VolumeDriver):
    """Volumes in shared LVM VGs, through sharedlvm-operator's resources.

    Version history:
        1.0.0 - Initial driver
    """

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'sharedlvm-operator'
    # Every piece of state lives in the custom resources, so several
    # cinder-volume replicas may serve the backend (cluster = ...).
    SUPPORTS_ACTIVE_ACTIVE = True

    def __init__(self, *args, **kwargs):
        super(SharedLVMDriver, self).__init__(*args, **kwargs)
        self.configuration.append_config_values(sharedlvm_opts)
        self.backend_name = (
            self.configuration.safe_get('volume_backend_name') or 'sharedlvm')
        self.protocol = 'local'
        self.res = None
        self._hostname = socket.gethostname()

    # Set-up.

    @staticmethod
    def get_driver_options():
        return sharedlvm_opts

    def do_setup(self, context):
        conf = self.configuration
        api = kube.api_client(conf.sharedlvm_kubeconfig,
                              conf.sharedlvm_kube_context)
        self.res = kube.Resources(api, conf.sharedlvm_namespace)

    def check_for_setup_error(self):
        try:
            vgs = self._served_volume_groups()
        except Exception as e:
            raise exception.VolumeBackendAPIException(
                data=_('cannot list sharedlvm.io VolumeGroups: %s') % e)
        missing = set(self.configuration.sharedlvm_volume_groups) - set(
            vg['metadata']['name'] for vg in vgs)
        if missing:
            raise exception.VolumeBackendAPIException(
                data=_('VolumeGroup(s) %s do not exist') % ', '.join(
                    sorted(missing)))
        if not vgs:
            raise exception.VolumeBackendAPIException(
                data=_('no sharedlvm.io VolumeGroup exists'))

    def _served_volume_groups(self):
        want = self.configuration.sharedlvm_volume_groups
        vgs = self.res.volume_groups()
        if want:
            vgs = [vg for vg in vgs if vg['metadata']['name'] in want]
        return vgs

    # Names: everything is derived from Cinder's names, so a retried call
    # finds the object its first attempt made.

    @staticmethod
    def _volume_cr(volume):
        return volume.name  # volume-<_name_id>, follows generic migrations

    @staticmethod
    def _snapshot_cr(snapshot):
        return snapshot.name  # snapshot-<id>

    @staticmethod
    def _snapshot_lv(snapshot):
        # LVM reserves LV names starting with "snapshot".
        return 'snap-%s' % snapshot.id

    def _node(self, host):
        if not host:
            raise exception.InvalidConnectorException(missing='host')
        return self.configuration.sharedlvm_host_map.get(host, host)

    def _own_node(self):
        return (self.configuration.sharedlvm_node_name or
                os.environ.get('NODE_NAME') or self._hostname)

    def _attachment_name(self, volume, node):
        return '%s-%s' % (self._volume_cr(volume), node)

    def _labels(self, kind, cinder_id):
        return {kube.LABEL_MANAGED_BY: kube.MANAGED_BY,
                kube.LABEL_CINDER_ID: cinder_id,
                kube.LABEL_CINDER_KIND: kind}

    def _fail(self, kind, name, obj, default_reason, ctype='Ready'):
        c = kube.condition(obj, ctype)
        reason = c.get('reason') or default_reason
        detail = c.get('message') or _('no condition reported')
        raise CRFailed(kind=kind, name=name, reason=reason, detail=detail)

    # Waiting on a SharedVolume.

    def _volume_done(self, name, want):
        """A predicate for kube.Resources.wait: want(obj) plus fail-fast."""
        def done(obj):
            status = obj.get('status') or {}
            if status.get('phase') == 'Failed':
                self._fail('SharedVolume', name, obj, 'Failed')
            for ctype in ('Ready', 'Provisioned'):
                c = kube.condition(obj, ctype)
                if (c.get('status') == 'False' and
                        c.get('reason') in TERMINAL_VOLUME_REASONS):
                    self._fail('SharedVolume', name, obj, c['reason'], ctype)
            return want(obj)
        return done

    @staticmethod
    def _ready(obj):
        status = obj.get('status') or {}
        gen = obj['metadata'].get('generation')
        return (status.get('observedGeneration') == gen and
                status.get('phase') in ('Available', 'InUse') and
                kube.condition(obj, 'Ready').get('status') == 'True')

    def _wait_volume(self, name, want=None, timeout=None):
        want = want or self._ready
        timeout = timeout or self.configuration.sharedlvm_volume_timeout
        try:
            return self.res.wait(kube.VOLUMES, name,
                                 self._volume_done(name, want), timeout)
        except kube.Timeout as e:
            self._fail('SharedVolume', name, e.obj, 'Timeout')
        except kube.Gone:
            raise CRFailed(kind='SharedVolume', name=name, reason='Deleted',
                           detail=_('the object was deleted meanwhile'))

    def _ensure_volume(self, name, spec, labels, cleanup_on_failure=True):
        """Creates the SharedVolume (or finds it) and waits until Ready.

        A create that fails (terminal reason or timeout) deletes the object
        again, so that a failed Cinder create leaves nothing behind.
        """
        body = {'kind': 'SharedVolume',
                'metadata': {'name': name, 'labels': labels},
                'spec': spec}
        created = False
        try:
            self.res.create(kube.VOLUMES, body)
            created = True
        except kube.Conflict:
            existing = self.res.get(kube.VOLUMES, name)
            if existing['metadata'].get('deletionTimestamp'):
                raise CRFailed(kind='SharedVolume', name=name,
                               reason='Deleting',
                               detail=_('a previous object of that name is '
                                        'still being deleted'))
        except Exception as e:
            # Admission (OpenAPI/CEL) refusals carry the reason in the body.
            raise exception.VolumeBackendAPIException(
                data=_('SharedVolume %(n)s refused: %(e)s') % {
                    'n': name, 'e': getattr(e, 'body', None) or e})
        try:
            return self._wait_volume(name)
        except Exception:
            if cleanup_on_failure and created:
                LOG.warning('SharedVolume %s did not become ready; deleting '
                            'it so that nothing is left behind', name)
                self._delete_volume_cr(name, raise_on_timeout=False)
            raise

    def _delete_volume_cr(self, name, raise_on_timeout=True):
        if self.res.delete(kube.VOLUMES, name):
            self._wait_gone(kube.VOLUMES, name,
                            self.configuration.sharedlvm_volume_timeout,
                            'DeleteTimeout', raise_on_timeout)

    def _wait_gone(self, plural, name, timeout, reason, raise_on_timeout):
        """Waits until a deleted object is gone (its finalizer released).

        On timeout: raises with the object's DeletionBlocked (volumes) or
        Ready (attachments) condition, or only logs.
        """
        kind, ctype = (('SharedVolume', 'DeletionBlocked')
                       if plural == kube.VOLUMES else
                       ('VolumeAttachment', 'Ready'))
        try:
            self.res.wait(plural, name, lambda obj: False, timeout,
                          gone_ok=True)
        except kube.Timeout as e:
            if raise_on_timeout:
                self._fail(kind, name, e.obj, reason, ctype)
            LOG.warning('%s %s is still being removed', kind, name)

    def _model_update(self, obj):
        status = obj.get('status') or {}
        return {'provider_location': '%s/%s' % (
            self.res.namespace, obj['metadata']['name']),
            'provider_id': status.get('lvUUID')}

    def _pool_of(self, volume):
        pool = volume_utils.extract_host(volume.host, 'pool')
        if not pool:
            raise exception.InvalidHost(
                reason=_('volume host %s names no pool (VolumeGroup)') %
                volume.host)
        return pool

    # Volumes.

    @_timed
    def create_volume(self, volume):
        name = self._volume_cr(volume)
        spec = {'volumeGroup': self._pool_of(volume),
                'size': '%dGi' % volume.size,
                'multiAttach': bool(volume.multiattach)}
        obj = self._ensure_volume(name, spec, self._labels('volume',
                                                           volume.id))
        return self._model_update(obj)

    def _create_copy(self, volume, source_cr, kind):
        name = self._volume_cr(volume)
        spec = {'volumeGroup': self._pool_of(volume),
                'size': '%dGi' % volume.size,
                'multiAttach': bool(volume.multiattach),
                'source': {'volume': source_cr}}
        obj = self._ensure_volume(name, spec, self._labels(kind, volume.id))
        return self._model_update(obj)

    @_timed
    def create_volume_from_snapshot(self, volume, snapshot):
        return self._create_copy(volume, self._snapshot_cr(snapshot),
                                 'volume')

    @_timed
    def create_cloned_volume(self, volume, src_vref):
        return self._create_copy(volume, self._volume_cr(src_vref), 'volume')

    @_timed
    def delete_volume(self, volume):
        name = self._volume_cr(volume)
        atts = self.res.attachments_of(name)
        if atts:
            raise exception.VolumeIsBusy(volume_name=name)
        self._delete_volume_cr(name)

    @_timed
    def extend_volume(self, volume, new_size):
        name = self._volume_cr(volume)
        want = new_size * units.Gi

        def extended(obj):
            st = obj.get('status') or {}
            return (self._ready(obj) and
                    _gib(st.get('allocatedSize')) * units.Gi >= want)
        try:
            self.res.patch(kube.VOLUMES, name,
                           {'spec': {'size': '%dGi' % new_size}})
        except kube.NotFound:
            raise exception.VolumeNotFound(volume_id=volume.id)
        self._wait_volume(name, extended)

    # Snapshots: an independent copy of the volume (thick LVM snapshots would
    # pin the origin to one host under lvmlockd, see docs/design.md §7).

    @_timed
    def create_snapshot(self, snapshot):
        name = self._snapshot_cr(snapshot)
        src = self.res.find(kube.VOLUMES, snapshot.volume_name)
        if src is None:
            raise exception.VolumeNotFound(volume_id=snapshot.volume_id)
        vg = ((src.get('status') or {}).get('volumeGroup') or
              src['spec']['volumeGroup'])
        spec = {'volumeGroup': vg,
                'size': '%dGi' % snapshot.volume_size,
                'lvName': self._snapshot_lv(snapshot),
                'source': {'volume': snapshot.volume_name}}
        obj = self._ensure_volume(name, spec,
                                  self._labels('snapshot', snapshot.id))
        return {'provider_location': self._model_update(obj)[
            'provider_location']}

    @_timed
    def delete_snapshot(self, snapshot):
        self._delete_volume_cr(self._snapshot_cr(snapshot))

    def revert_to_snapshot(self, context, volume, snapshot):
        # The operator has no in-place revert; Cinder's generic revert (a
        # temporary volume from the snapshot, copied back on this node under a
        # 'copy' attachment) does it through the calls above.
        raise NotImplementedError()

    # Exports: none; hosts open /dev/VG/LV once they hold the lock.

    def ensure_export(self, context, volume):
        pass

    def create_export(self, context, volume, connector):
        pass

    def remove_export(self, context, volume):
        pass

    def validate_connector(self, connector):
        if not connector or not connector.get('host'):
            raise exception.InvalidConnectorException(missing='host')

    # Connections.

    def _is_own_copy(self, connector):
        # Cinder's own copies (image <-> volume, generic migration and revert)
        # attach with brick_get_connector_properties(), whose host is this
        # process's hostname and which has no mountpoint (attachments made
        # through Cinder's attachment API carry one from Nova).
        return (connector.get('host') == self._hostname and
                'mountpoint' not in connector and
                connector.get('host') not in
                self.configuration.sharedlvm_host_map)

    @staticmethod
    def _attachment_host(att):
        conn = att.connector or {}
        return conn.get('host') or att.attached_host

    def _purpose(self, volume, node):
        if volume.multiattach:
            return 'instance'
        # The API lets a second attachment of a non-multiattach volume through
        # only for the same server: another host means a live migration.
        for att in volume.volume_attachment or []:
            host = self._attachment_host(att)
            if host and self._node(host) != node and att.attach_status in (
                    'attached', 'attaching'):
                return 'migration-target'
        return 'instance'

    @_timed
    def initialize_connection(self, volume, connector):
        self.validate_connector(connector)
        if self._is_own_copy(connector):
            node, purpose = self._own_node(), 'copy'
        else:
            node = self._node(connector['host'])
            purpose = self._purpose(volume, node)
        vol_cr = self._volume_cr(volume)
        name = self._attachment_name(volume, node)
        body = {'kind': 'VolumeAttachment',
                'metadata': {'name': name,
                             'labels': self._labels('attachment', volume.id)},
                'spec': {'volume': vol_cr, 'node': node, 'purpose': purpose}}
        created = False
        try:
            self.res.create(kube.ATTACHMENTS, body)
            created = True
        except kube.Conflict:
            pass
        try:
            att = self._wait_attached(name)
        except Exception:
            if created:
                # Leave nothing behind: the node must not take the lock
                # later for an attach Cinder has given up on.
                self._detach([name], raise_on_timeout=False)
            raise
        LOG.info('Volume %(v)s attached on node %(n)s (%(p)s): %(l)s lock',
                 {'v': vol_cr, 'n': node, 'p': purpose,
                  'l': att['status'].get('appliedLock')})
        self._record_lock(volume)
        data = {'device_path': att['status']['devicePath'],
                'access_mode': 'rw'}
        return {'driver_volume_type': 'local', 'data': data}

    def _wait_attached(self, name):
        def attached(obj):
            st = obj.get('status') or {}
            if st.get('phase') == 'Failed':
                self._fail('VolumeAttachment', name, obj, 'Failed')
            c = kube.condition(obj, 'Ready')
            if (c.get('status') == 'False' and
                    c.get('reason') in TERMINAL_ATTACH_REASONS):
                self._fail('VolumeAttachment', name, obj, c['reason'])
            return (st.get('phase') == 'Attached' and
                    st.get('devicePath') and
                    st.get('appliedLock') in ('Exclusive', 'Shared'))
        try:
            return self.res.wait(kube.ATTACHMENTS, name, attached,
                                 self.configuration.sharedlvm_attach_timeout)
        except kube.Timeout as e:
            self._fail('VolumeAttachment', name, e.obj, 'Timeout')
        except kube.Gone:
            raise CRFailed(kind='VolumeAttachment', name=name,
                           reason='Deleted',
                           detail=_('the attachment was deleted meanwhile'))

    @_timed
    def terminate_connection(self, volume, connector, **kwargs):
        vol_cr = self._volume_cr(volume)
        if connector is None:
            # A force detach of every host.
            names = [a['metadata']['name']
                     for a in self.res.attachments_of(vol_cr)]
        else:
            host = connector.get('host')
            if self._is_own_copy(connector):
                node = self._own_node()
            else:
                node = self._node(host)
                same_host = [a for a in volume.volume_attachment or []
                             if self._attachment_host(a) == host]
                if len(same_host) > 1:
                    # Another Cinder attachment (a second server) on this
                    # host still uses the volume: keep the node's lock.
                    return True
            names = [self._attachment_name(volume, node)]
        self._detach(names)
        self._record_lock(volume)
        return False

    def _detach(self, names, raise_on_timeout=True):
        """Deletes attachments and waits until their nodes released the lock.

        The operator removes an attachment's finalizer only once the node's
        agent has deactivated the LV and released its lease.
        """
        for name in names:
            self.res.delete(kube.ATTACHMENTS, name)
        for name in names:
            self._wait_gone(kube.ATTACHMENTS, name,
                            self.configuration.sharedlvm_attach_timeout,
                            'DetachTimeout', raise_on_timeout)

    def _lock_view(self, vol_cr):
        holders, modes = [], set()
        for a in self.res.attachments_of(vol_cr):
            mode = (a.get('status') or {}).get('appliedLock')
            if mode in ('Exclusive', 'Shared'):
                holders.append(a['spec']['node'])
                modes.add(mode)
        mode = 'None' if not modes else (
            'Shared' if 'Shared' in modes else 'Exclusive')
        return mode, sorted(set(holders))

    def _record_lock(self, volume):
        """Writes the volume's lock mode and holders into its metadata."""
        try:
            mode, holders = self._lock_view(self._volume_cr(volume))
            ctx = cinder_context.get_admin_context()
            self.db.volume_metadata_update(
                ctx, volume.id,
                {META_LOCK: mode, META_HOLDERS: ','.join(holders)}, False)
        except Exception as e:  # informational only: never fail the call
            LOG.debug('could not record the lock of %s: %s', volume.id, e)

    # Migration and retype between the VolumeGroups (pools) of this backend.

    def _same_backend(self, host):
        backend = volume_utils.extract_host(host['host'], 'backend')
        return backend == volume_utils.extract_host(self.host, 'backend')

    def _move_to_pool(self, volume, pool):
        name = self._volume_cr(volume)
        self.res.volume_group(pool)  # raises NotFound for an unknown pool

        def moved(obj):
            st = obj.get('status') or {}
            return st.get('volumeGroup') == pool and self._ready(obj)
        self.res.patch(kube.VOLUMES, name, {'spec': {'volumeGroup': pool}})
        return self._wait_volume(name, moved)

    def _attached_anywhere(self, volume):
        # Cinder's status says 'retyping' or 'migrating' here, not whether
        # the volume is attached: ask the attachments themselves.
        return bool(self.res.attachments_of(self._volume_cr(volume))) or any(
            a.attach_status in ('attached', 'attaching')
            for a in volume.volume_attachment or [])

    @_timed
    def migrate_volume(self, context, volume, host):
        if not self._same_backend(host) or self._attached_anywhere(volume):
            # Another backend, or attached (the device path would change
            # under the instance): Cinder's generic migration takes over.
            return False, None
        pool = volume_utils.extract_host(host['host'], 'pool')
        if not pool:
            return False, None
        if pool == self._pool_of(volume):
            return True, None
        try:
            obj = self._move_to_pool(volume, pool)
        except kube.NotFound:
            return False, None
        return True, self._model_update(obj)

    @_timed
    def retype(self, context, volume, new_type, diff, host):
        if not self._same_backend(host):
            return False
        name = self._volume_cr(volume)
        multi = None
        specs = (diff or {}).get('extra_specs') or {}
        if 'multiattach' in specs:
            multi = specs['multiattach'][1] == '<is> True'
        pool = volume_utils.extract_host(host['host'], 'pool')
        if pool and pool != self._pool_of(volume):
            if self._attached_anywhere(volume):
                return False
            try:
                self._move_to_pool(volume, pool)
            except kube.NotFound:
                return False
        if multi is not None:
            self.res.patch(kube.VOLUMES, name,
                           {'spec': {'multiAttach': multi}})
        return True

    # Stats: one pool per VolumeGroup.

    def _update_volume_stats(self):
        data = {'volume_backend_name': self.backend_name,
                'vendor_name': 'sharedlvm-operator',
                'driver_version': self.VERSION,
                'storage_protocol': self.protocol,
                'shared_targets': False,
                'sparse_copy_volume': False,
                'pools': []}
        try:
            vgs = self._served_volume_groups()
            volumes = self.res.list(kube.VOLUMES)
        except Exception as e:
            LOG.warning('cannot read the VolumeGroups: %s', e)
            vgs, volumes = [], []
        for vg in vgs:
            data['pools'].append(self._pool_stats(vg, volumes))
        self._stats = data

    def _pool_stats(self, vg, volumes):
        name = vg['metadata']['name']
        st = vg.get('status') or {}
        ready = kube.condition(vg, 'Ready').get('status') == 'True'
        mine = [v for v in volumes if self._vg_of(v) == name]
        provisioned = sum(_gib(v['spec']['size']) for v in mine)
        nodes = {}
        for n in st.get('nodes') or []:
            nodes[n['node']] = {
                'host_id': n.get('hostID'),
                'lockspace': ('started' if n.get('lockspaceStarted')
                              else n.get('reason') or 'not started'),
                'last_report': n.get('lastReport')}
        pvs = [{'name': p.get('name'),
                'size_gb': round(_gib(p.get('size')), 2),
                'free_gb': round(_gib(p.get('free')), 2),
                'missing': bool(p.get('missing'))}
               for p in st.get('pvs') or []]
        return {
            'pool_name': name,
            'total_capacity_gb': round(_gib(st.get('size')), 2),
            'free_capacity_gb': round(_gib(st.get('free')), 2),
            'provisioned_capacity_gb': round(provisioned, 2),
            'reserved_percentage':
                self.configuration.safe_get('reserved_percentage') or 0,
            'max_over_subscription_ratio': 1.0,
            'thin_provisioning_support': False,
            'thick_provisioning_support': True,
            'multiattach': True,
            'online_extend_support': False,
            'QoS_support': False,
            'total_volumes': len(mine),
            'location_info': 'SharedLVMDriver:%s:%s' % (
                self.res.namespace, name),
            'backend_state': 'up' if ready else 'down',
            # The "Volume groups" view: what the agents collect.
            'sharedlvm_vg_name': vg['spec'].get('vgName'),
            'sharedlvm_vg_uuid': st.get('vgUUID'),
            'sharedlvm_nodes_ready': st.get('nodesReady'),
            'sharedlvm_pvs': pvs,
            'sharedlvm_nodes': nodes,
            'sharedlvm_volume_types': vg['spec'].get('volumeTypes') or [],
        }

    @staticmethod
    def _vg_of(obj):
        return ((obj.get('status') or {}).get('volumeGroup') or
                obj['spec']['volumeGroup'])

    def get_pool(self, volume):
        obj = self.res.find(kube.VOLUMES, self._volume_cr(volume))
        if obj is not None:
            return ((obj.get('status') or {}).get('volumeGroup') or
                    obj['spec']['volumeGroup'])
        return volume_utils.extract_host(volume.host, 'pool')

    # Manage / unmanage: the operator takes over an LV no SharedVolume owns
    # (spec.adopt) and lets one go with its data (deletionPolicy Retain).

    def _manage_target(self, existing_ref):
        name = (existing_ref or {}).get('source-name')
        if not name or not LV_NAME.match(name) or name in ('lvmlock',) or \
                name.startswith(('snapshot', 'pvmove')):
            raise exception.ManageExistingInvalidReference(
                existing_ref=existing_ref,
                reason=_('source-name must name an LV of the pool\'s VG '
                         '(letters, digits, + _ . -; at most 63)'))
        return name

    @_timed
    def manage_existing_get_size(self, volume, existing_ref):
        lv = self._manage_target(existing_ref)
        name = self._volume_cr(volume)
        spec = {'volumeGroup': self._pool_of(volume), 'size': '1Mi',
                'lvName': lv, 'adopt': True,
                'multiAttach': bool(volume.multiattach)}
        try:
            obj = self._ensure_volume(name, spec,
                                      self._labels('volume', volume.id))
        except CRFailed as e:
            raise exception.ManageExistingInvalidReference(
                existing_ref=existing_ref, reason=str(e))
        size = _gib((obj.get('status') or {}).get('allocatedSize'))
        return int(math.ceil(size))

    @_timed
    def manage_existing(self, volume, existing_ref):
        name = self._volume_cr(volume)
        if self.res.find(kube.VOLUMES, name) is None:
            self.manage_existing_get_size(volume, existing_ref)
        # Cinder rounded the size up to whole GiB: the LV grows to match.
        self.extend_volume(volume, volume.size)
        return self._model_update(self.res.get(kube.VOLUMES, name))

    @_timed
    def unmanage(self, volume):
        name = self._volume_cr(volume)
        try:
            self.res.patch(kube.VOLUMES, name,
                           {'spec': {'deletionPolicy': 'Retain'}})
        except kube.NotFound:
            return
        self._delete_volume_cr(name)
