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
"""Unit tests of the Cinder driver against a real control plane.

Cinder's own test base (in-memory DB, fake RPC) drives the driver; the driver
talks to a real kube-apiserver on which the real operator and three real node
agents run over the in-memory model of shared LVM (hack/local
--storage=model). test/openstack/run-unit.sh starts that and points
SHAREDLVM_KUBECONFIG at it.
"""

import os
import socket
import time
import uuid

# First: importing Cinder's test package monkey-patches eventlet, as
# cinder-volume does at start, before anything imports ssl.
from cinder.tests.unit import test  # noqa: I100

from cinder import context
from cinder import exception
from cinder.tests.unit import fake_snapshot
from cinder.tests.unit import fake_volume
from cinder.volume import configuration as conf

from sharedlvm_cinder import driver
from sharedlvm_cinder import kube

GROUP = 'sharedlvm-test'
HOST = 'cinder@sharedlvm'
SSD, HDD = 'cinder-ssd', 'cinder-hdd'
OWN_NODE = 'compute-2'  # the node this "cinder-volume" runs on


def nova_connector(host):
    # What Nova sends through attachment_update (os-brick properties plus the
    # mountpoint and mode the attachment API adds).
    return {'host': host, 'ip': '192.0.2.10', 'platform': 'x86_64',
            'os_type': 'linux', 'multipath': False,
            'initiator': 'iqn.1993-08.org.debian:01:%s' % host,
            'mountpoint': '/dev/vdb', 'mode': 'rw'}


def own_copy_connector():
    # brick_get_connector_properties() on the cinder-volume host.
    return {'host': socket.gethostname(), 'ip': '127.0.0.1',
            'platform': 'x86_64', 'os_type': 'linux', 'multipath': False,
            'do_local_attach': False}


class SharedLVMDriverTestCase(test.TestCase):

    def setUp(self):
        super(SharedLVMDriverTestCase, self).setUp()
        self.context = context.get_admin_context()
        kubeconfig = os.environ.get('SHAREDLVM_KUBECONFIG')
        if not kubeconfig:
            self.skipTest('SHAREDLVM_KUBECONFIG not set: run '
                          'test/openstack/run-unit.sh')
        self.configuration = conf.Configuration(driver.sharedlvm_opts,
                                                config_group=GROUP)
        self.override_config('sharedlvm_kubeconfig', kubeconfig, GROUP)
        self.override_config('sharedlvm_namespace', 'openstack', GROUP)
        self.override_config('sharedlvm_volume_groups', [SSD, HDD], GROUP)
        self.override_config('sharedlvm_node_name', OWN_NODE, GROUP)
        self.override_config('sharedlvm_volume_timeout', 30, GROUP)
        self.override_config('sharedlvm_attach_timeout', 20, GROUP)
        self.override_config('sharedlvm_host_map',
                             {'nova-compute-a': 'compute-0'}, GROUP)
        self.driver = driver.SharedLVMDriver(configuration=self.configuration,
                                             host=HOST)
        self.driver.do_setup(None)
        self.res = self.driver.res
        self.driver.check_for_setup_error()

    # Helpers.

    def _volume(self, pool=SSD, size=1, multiattach=False, **kw):
        vol = fake_volume.fake_volume_obj(
            self.context, id=str(uuid.uuid4()), size=size,
            host='%s#%s' % (HOST, pool), multiattach=multiattach,
            status=kw.pop('status', 'available'), **kw)
        return vol

    def _created(self, **kw):
        vol = self._volume(**kw)
        self.driver.create_volume(vol)
        self.addCleanup(self._cleanup, vol)
        return vol

    def _cleanup(self, vol):
        for a in self.res.attachments_of(vol.name):
            self.res.delete(kube.ATTACHMENTS, a['metadata']['name'])
        self.res.delete(kube.VOLUMES, vol.name)

    def _attached(self, vol, connector, status='attached'):
        """Records a Cinder attachment on vol as the DB would hold it."""
        att = fake_volume.volume_attachment_ovo(
            self.context, id=str(uuid.uuid4()), volume_id=vol.id,
            attach_status=status, attached_host=connector['host'])
        att.connector = connector
        vol.volume_attachment.objects.append(att)
        return att

    def _locks(self, vol, want, timeout=15):
        """Waits until the attachments' applied locks are want {node: mode}."""
        deadline = time.monotonic() + timeout
        while True:
            got = {a['spec']['node']: (a.get('status') or {}).get(
                'appliedLock') for a in self.res.attachments_of(vol.name)}
            if got == want or time.monotonic() > deadline:
                self.assertEqual(want, got)
                return
            time.sleep(0.1)

    # Stats.

    def test_stats_one_pool_per_volume_group(self):
        stats = self.driver.get_volume_stats(refresh=True)
        self.assertEqual('sharedlvm', stats['volume_backend_name'])
        self.assertEqual('local', stats['storage_protocol'])
        pools = {p['pool_name']: p for p in stats['pools']}
        self.assertEqual({SSD, HDD}, set(pools))
        for name, p in pools.items():
            self.assertEqual(100.0, p['total_capacity_gb'])
            self.assertGreater(p['free_capacity_gb'], 0)
            self.assertLessEqual(p['free_capacity_gb'], 100.0)
            self.assertTrue(p['multiattach'])
            self.assertFalse(p['online_extend_support'])
            self.assertFalse(p['thin_provisioning_support'])
            self.assertEqual('up', p['backend_state'])
            self.assertEqual(name, p['sharedlvm_vg_name'])
            self.assertEqual(1, len(p['sharedlvm_pvs']))
            self.assertEqual({'compute-0', 'compute-1', 'compute-2'},
                             set(p['sharedlvm_nodes']))
            for n in p['sharedlvm_nodes'].values():
                self.assertEqual('started', n['lockspace'])
                self.assertGreater(n['host_id'], 0)

    def test_setup_error_names_missing_volume_group(self):
        self.override_config('sharedlvm_volume_groups', [SSD, 'nosuchvg'],
                             GROUP)
        self.assertRaisesRegex(exception.VolumeBackendAPIException,
                               'nosuchvg', self.driver.check_for_setup_error)

    # Create / delete.

    def test_create_is_idempotent_and_delete_leaves_nothing(self):
        vol = self._volume()
        update = self.driver.create_volume(vol)
        obj = self.res.get(kube.VOLUMES, vol.name)
        self.assertEqual(SSD, obj['spec']['volumeGroup'])
        self.assertEqual('1Gi', obj['spec']['size'])
        self.assertEqual(vol.id,
                         obj['metadata']['labels'][kube.LABEL_CINDER_ID])
        self.assertEqual('openstack/%s' % vol.name,
                         update['provider_location'])
        self.assertEqual(obj['status']['lvUUID'], update['provider_id'])
        # Cinder retries a create whose RPC was lost: same object, same LV.
        self.assertEqual(update, self.driver.create_volume(vol))
        self.driver.delete_volume(vol)
        self.assertIsNone(self.res.find(kube.VOLUMES, vol.name))
        self.driver.delete_volume(vol)  # already gone: fine

    def test_create_too_large_fails_with_reason_and_leaves_nothing(self):
        vol = self._volume(size=500)
        self.assertRaisesRegex(exception.VolumeBackendAPIException,
                               'InsufficientSpace', self.driver.create_volume,
                               vol)
        self.assertIsNone(self.res.find(kube.VOLUMES, vol.name))

    def test_create_in_unknown_pool_fails_with_reason(self):
        vol = self._volume(pool='nosuchvg')
        self.assertRaisesRegex(exception.VolumeBackendAPIException,
                               'VolumeGroupNotFound',
                               self.driver.create_volume, vol)
        self.assertIsNone(self.res.find(kube.VOLUMES, vol.name))

    def test_delete_while_attached_is_busy(self):
        vol = self._created()
        self.driver.initialize_connection(vol, nova_connector('compute-0'))
        self.assertRaises(exception.VolumeIsBusy, self.driver.delete_volume,
                          vol)
        self.assertIsNotNone(self.res.find(kube.VOLUMES, vol.name))

    # Connections.

    def test_attach_is_exclusive_and_returns_local_device(self):
        vol = self._created()
        info = self.driver.initialize_connection(vol,
                                                 nova_connector('compute-0'))
        self.assertEqual('local', info['driver_volume_type'])
        self.assertEqual('/dev/%s/%s' % (SSD, vol.name),
                         info['data']['device_path'])
        self._locks(vol, {'compute-0': 'Exclusive'})
        att = self.res.get(kube.ATTACHMENTS, '%s-compute-0' % vol.name)
        self.assertEqual('instance', att['spec']['purpose'])
        # Retried by Cinder: the same attachment.
        self.assertEqual(info, self.driver.initialize_connection(
            vol, nova_connector('compute-0')))
        self.assertEqual(1, len(self.res.attachments_of(vol.name)))
        conn = nova_connector('compute-0')
        self._attached(vol, conn)
        self.assertFalse(self.driver.terminate_connection(vol, conn))
        self.assertEqual([], self.res.attachments_of(vol.name))
        # A retried terminate is a no-op.
        self.assertFalse(self.driver.terminate_connection(vol, conn))

    def test_host_map_names_the_node(self):
        vol = self._created()
        self.driver.initialize_connection(vol,
                                          nova_connector('nova-compute-a'))
        self._locks(vol, {'compute-0': 'Exclusive'})

    def test_live_migration_shared_then_exclusive_and_back(self):
        vol = self._created()
        src, dst = nova_connector('compute-0'), nova_connector('compute-1')
        self.driver.initialize_connection(vol, src)
        src_att = self._attached(vol, src)
        self._locks(vol, {'compute-0': 'Exclusive'})
        for _round in range(2):
            # Nova's pre_live_migration: the destination's attachment while
            # the source's exists -> migration-target, both shared.
            self.driver.initialize_connection(vol, dst)
            att = self.res.get(kube.ATTACHMENTS, '%s-%s' % (
                vol.name, dst['host']))
            self.assertEqual('migration-target', att['spec']['purpose'])
            self._locks(vol, {src['host']: 'Shared', dst['host']: 'Shared'})
            dst_att = self._attached(vol, dst)
            # _post_live_migration deletes the source's attachment.
            self.assertFalse(self.driver.terminate_connection(vol, src))
            vol.volume_attachment.objects.remove(src_att)
            self._locks(vol, {dst['host']: 'Exclusive'})
            src, dst, src_att = dst, src, dst_att

    def test_cold_migration_moves_the_exclusive_lock(self):
        vol = self._created()
        src, dst = nova_connector('compute-0'), nova_connector('compute-1')
        self.driver.initialize_connection(vol, src)
        src_att = self._attached(vol, src)
        self.driver.terminate_connection(vol, src)
        vol.volume_attachment.objects.remove(src_att)
        self.driver.initialize_connection(vol, dst)
        att = self.res.get(kube.ATTACHMENTS, '%s-compute-1' % vol.name)
        self.assertEqual('instance', att['spec']['purpose'])
        self._locks(vol, {'compute-1': 'Exclusive'})

    def test_multiattach_is_shared_and_a_second_server_keeps_the_host(self):
        vol = self._created(multiattach=True)
        a, b = nova_connector('compute-0'), nova_connector('compute-1')
        self.driver.initialize_connection(vol, a)
        a1 = self._attached(vol, a)
        self.driver.initialize_connection(vol, b)
        self._attached(vol, b)
        self._locks(vol, {'compute-0': 'Shared', 'compute-1': 'Shared'})
        att = self.res.get(kube.ATTACHMENTS, '%s-compute-1' % vol.name)
        self.assertEqual('instance', att['spec']['purpose'])
        # A second server on compute-0: its own Cinder attachment, the same
        # node lock.
        self.driver.initialize_connection(vol, a)
        self._attached(vol, a)
        self.assertTrue(self.driver.terminate_connection(vol, a))
        vol.volume_attachment.objects.remove(a1)
        self._locks(vol, {'compute-0': 'Shared', 'compute-1': 'Shared'})
        self.assertFalse(self.driver.terminate_connection(vol, a))
        self._locks(vol, {'compute-1': 'Exclusive'})

    def test_copy_on_own_node_takes_and_releases_the_lock(self):
        vol = self._created()
        conn = own_copy_connector()
        info = self.driver.initialize_connection(vol, conn)
        self.assertEqual('/dev/%s/%s' % (SSD, vol.name),
                         info['data']['device_path'])
        att = self.res.get(kube.ATTACHMENTS, '%s-%s' % (vol.name, OWN_NODE))
        self.assertEqual('copy', att['spec']['purpose'])
        self._locks(vol, {OWN_NODE: 'Exclusive'})
        self.assertFalse(self.driver.terminate_connection(vol, conn,
                                                          force=True))
        self.assertEqual([], self.res.attachments_of(vol.name))

    def test_force_detach_without_connector_releases_every_host(self):
        vol = self._created(multiattach=True)
        for h in ('compute-0', 'compute-1'):
            self.driver.initialize_connection(vol, nova_connector(h))
        self.driver.terminate_connection(vol, None, force=True)
        self.assertEqual([], self.res.attachments_of(vol.name))

    def test_attach_to_unknown_node_fails_with_reason_and_cleans_up(self):
        self.override_config('sharedlvm_attach_timeout', 3, GROUP)
        vol = self._created()
        self.assertRaisesRegex(exception.VolumeBackendAPIException,
                               'NodeNotReady.*nosuchnode',
                               self.driver.initialize_connection, vol,
                               nova_connector('nosuchnode'))
        self.assertEqual([], self.res.attachments_of(vol.name))

    def test_connector_without_host_is_refused(self):
        vol = self._volume()
        self.assertRaises(exception.InvalidConnectorException,
                          self.driver.initialize_connection, vol, {})

    # Extend, snapshots, clones.

    def test_extend_available_volume(self):
        vol = self._created()
        self.driver.extend_volume(vol, 3)
        obj = self.res.get(kube.VOLUMES, vol.name)
        self.assertEqual('3Gi', obj['spec']['size'])
        self.assertEqual('3Gi', obj['status']['allocatedSize'])

    def test_snapshot_volume_from_snapshot_and_clone(self):
        vol = self._created()
        snap = fake_snapshot.fake_snapshot_obj(
            self.context, id=str(uuid.uuid4()), volume_id=vol.id,
            volume_size=1, volume=vol)
        self.driver.create_snapshot(snap)
        self.addCleanup(self.res.delete, kube.VOLUMES, snap.name)
        obj = self.res.get(kube.VOLUMES, snap.name)
        self.assertEqual({'volume': vol.name}, obj['spec']['source'])
        self.assertEqual('snap-%s' % snap.id, obj['status']['lvName'])
        # A larger volume from the snapshot.
        from_snap = self._volume(pool=HDD, size=2)
        self.driver.create_volume_from_snapshot(from_snap, snap)
        self.addCleanup(self._cleanup, from_snap)
        obj = self.res.get(kube.VOLUMES, from_snap.name)
        self.assertEqual({'volume': snap.name}, obj['spec']['source'])
        self.assertEqual(HDD, obj['status']['volumeGroup'])
        self.assertEqual('2Gi', obj['status']['allocatedSize'])
        clone = self._volume()
        self.driver.create_cloned_volume(clone, vol)
        self.addCleanup(self._cleanup, clone)
        self.assertEqual({'volume': vol.name}, self.res.get(
            kube.VOLUMES, clone.name)['spec']['source'])
        self.driver.delete_snapshot(snap)
        self.assertIsNone(self.res.find(kube.VOLUMES, snap.name))

    def test_clone_smaller_than_source_fails_with_reason(self):
        vol = self._created(size=2)
        clone = self._volume(size=1)
        self.assertRaisesRegex(exception.VolumeBackendAPIException,
                               'SourceLargerThanVolume',
                               self.driver.create_cloned_volume, clone, vol)
        self.assertIsNone(self.res.find(kube.VOLUMES, clone.name))

    # Migration and retype between pools (VolumeGroups).

    def test_migrate_between_pools(self):
        vol = self._created()
        moved, update = self.driver.migrate_volume(
            self.context, vol, {'host': '%s#%s' % (HOST, HDD),
                                'capabilities': {}})
        self.assertTrue(moved)
        obj = self.res.get(kube.VOLUMES, vol.name)
        self.assertEqual(HDD, obj['status']['volumeGroup'])
        self.assertEqual(obj['status']['lvUUID'], update['provider_id'])
        vol.host = '%s#%s' % (HOST, HDD)
        self.assertEqual(HDD, self.driver.get_pool(vol))

    def test_migrate_to_another_backend_or_while_attached_is_generic(self):
        vol = self._created()
        self.assertEqual((False, None), self.driver.migrate_volume(
            self.context, vol, {'host': 'other@lvm#%s' % HDD}))
        self.driver.initialize_connection(vol, nova_connector('compute-0'))
        vol.status = 'migrating'  # what Cinder says, attached or not
        self.assertEqual((False, None), self.driver.migrate_volume(
            self.context, vol, {'host': '%s#%s' % (HOST, HDD)}))
        self.assertFalse(self.driver.retype(
            self.context, vol, {'name': 'hdd'},
            {'extra_specs': {'pool_name': [SSD, HDD]}},
            {'host': '%s#%s' % (HOST, HDD)}))
        self.assertEqual(SSD, self.res.get(
            kube.VOLUMES, vol.name)['status']['volumeGroup'])

    def test_retype_to_other_pool_and_multiattach(self):
        vol = self._created()
        vol.status = 'retyping'  # as the volume manager sets it
        diff = {'extra_specs': {'pool_name': [SSD, HDD],
                                'multiattach': [None, '<is> True']}}
        self.assertTrue(self.driver.retype(
            self.context, vol, {'name': 'hdd-multi'}, diff,
            {'host': '%s#%s' % (HOST, HDD)}))
        obj = self.res.get(kube.VOLUMES, vol.name)
        self.assertEqual(HDD, obj['status']['volumeGroup'])
        self.assertTrue(obj['spec']['multiAttach'])

    # Manage / unmanage.

    def test_unmanage_keeps_the_lv_and_manage_takes_it_over(self):
        old = self._created(size=2)
        lv = self.res.get(kube.VOLUMES, old.name)['status']
        self.driver.unmanage(old)
        self.assertIsNone(self.res.find(kube.VOLUMES, old.name))
        new = self._volume()
        ref = {'source-name': lv['lvName']}
        self.assertEqual(2, self.driver.manage_existing_get_size(new, ref))
        self.addCleanup(self._cleanup, new)
        new.size = 2
        update = self.driver.manage_existing(new, ref)
        obj = self.res.get(kube.VOLUMES, new.name)
        # The same LV, now this volume's.
        self.assertEqual(lv['lvUUID'], obj['status']['lvUUID'])
        self.assertEqual(lv['lvUUID'], update['provider_id'])
        self.assertEqual('2Gi', obj['status']['allocatedSize'])
        self.driver.initialize_connection(new, nova_connector('compute-1'))
        self._locks(new, {'compute-1': 'Exclusive'})

    def test_manage_refuses_missing_or_owned_lv_with_reason(self):
        owned = self._created()
        vol = self._volume()
        self.assertRaisesRegex(exception.ManageExistingInvalidReference,
                               'AlreadyExists.*another SharedVolume',
                               self.driver.manage_existing_get_size, vol,
                               {'source-name': owned.name})
        self.assertIsNone(self.res.find(kube.VOLUMES, vol.name))
        self.assertRaisesRegex(exception.ManageExistingInvalidReference,
                               'LVNotFound',
                               self.driver.manage_existing_get_size, vol,
                               {'source-name': 'lv-legacy'})
        self.assertIsNone(self.res.find(kube.VOLUMES, vol.name))
        self.assertRaises(exception.ManageExistingInvalidReference,
                          self.driver.manage_existing_get_size, vol,
                          {'source-name': 'bad/name'})
