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
"""The sharedlvm.io custom resources, as the Cinder driver uses them.

Nothing here runs LVM or sanlock: each call is an object read or write on the
Kubernetes API, and waits watch the object's status (a watch stream from the
read's resourceVersion, re-armed until the deadline). Works under eventlet:
the Kubernetes client's sockets are green once cinder-volume monkey-patches.
"""

import os
import time

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config import kube_config
from kubernetes import watch as k8s_watch
from kubernetes.client import exceptions as k8s_exc

GROUP = 'sharedlvm.io'
VERSION = 'v1alpha1'
VOLUMES = 'sharedvolumes'
ATTACHMENTS = 'volumeattachments'
VOLUME_GROUPS = 'volumegroups'

# Labels the driver puts on every object it creates, so that an admin (and the
# driver) can tell Cinder's objects from others.
LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by'
MANAGED_BY = 'cinder'
LABEL_CINDER_ID = 'sharedlvm.io/cinder-id'
LABEL_CINDER_KIND = 'sharedlvm.io/cinder-kind'


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class Timeout(Exception):
    """The object did not reach the awaited state in time.

    obj is its last state seen.
    """

    def __init__(self, obj):
        super().__init__('timed out')
        self.obj = obj


class Gone(Exception):
    """The object was deleted while waiting for a state it cannot reach."""


def condition(obj, ctype):
    """The status condition of that type, or an empty dict."""
    for c in ((obj or {}).get('status') or {}).get('conditions') or []:
        if c.get('type') == ctype:
            return c
    return {}


def api_client(kubeconfig=None, context=None):
    """An ApiClient from a kubeconfig file, or the pod's service account."""
    if kubeconfig:
        # The client writes inline certificates to temporary files once per
        # process and reuses their paths even after a tmp cleaner (or a test
        # fixture) removed them; forget the ones that are gone.
        cache = getattr(kube_config, '_temp_files', {})
        for key, path in list(cache.items()):
            if not os.path.exists(path):
                del cache[key]
        return k8s_config.new_client_from_config(config_file=kubeconfig,
                                                 context=context or None)
    cfg = k8s_client.Configuration()
    k8s_config.load_incluster_config(client_configuration=cfg)
    return k8s_client.ApiClient(configuration=cfg)


class Resources(object):
    """Reads, writes and watches sharedlvm.io objects in one namespace."""

    def __init__(self, api, namespace, request_timeout=30):
        self.api = k8s_client.CustomObjectsApi(api)
        self.namespace = namespace
        self.request_timeout = request_timeout

    @staticmethod
    def _raise(e):
        if isinstance(e, k8s_exc.ApiException):
            if e.status == 404:
                raise NotFound(e.reason) from e
            if e.status == 409:
                raise Conflict(e.reason) from e
        raise e

    # Namespaced objects (SharedVolume, VolumeAttachment).

    def get(self, plural, name):
        try:
            return self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name,
                _request_timeout=self.request_timeout)
        except k8s_exc.ApiException as e:
            self._raise(e)

    def find(self, plural, name):
        """The object, or None when it does not exist."""
        try:
            return self.get(plural, name)
        except NotFound:
            return None

    def create(self, plural, body):
        body = dict(body, apiVersion='%s/%s' % (GROUP, VERSION))
        try:
            return self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, body,
                _request_timeout=self.request_timeout)
        except k8s_exc.ApiException as e:
            self._raise(e)

    def patch(self, plural, name, patch):
        """A JSON merge patch of the object."""
        try:
            return self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, patch,
                _request_timeout=self.request_timeout)
        except k8s_exc.ApiException as e:
            self._raise(e)

    def delete(self, plural, name):
        """Deletes the object; False when it was already gone."""
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name,
                _request_timeout=self.request_timeout)
            return True
        except k8s_exc.ApiException as e:
            if e.status == 404:
                return False
            self._raise(e)

    def list(self, plural, field_selector=None, label_selector=None):
        try:
            out = self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural,
                field_selector=field_selector or None,
                label_selector=label_selector or None,
                _request_timeout=self.request_timeout)
        except k8s_exc.ApiException as e:
            self._raise(e)
        return out.get('items') or []

    def attachments_of(self, volume_name):
        return self.list(ATTACHMENTS,
                         field_selector='spec.volume=%s' % volume_name)

    # Cluster-scoped VolumeGroups.

    def volume_groups(self):
        try:
            out = self.api.list_cluster_custom_object(
                GROUP, VERSION, VOLUME_GROUPS,
                _request_timeout=self.request_timeout)
        except k8s_exc.ApiException as e:
            self._raise(e)
        return out.get('items') or []

    def volume_group(self, name):
        try:
            return self.api.get_cluster_custom_object(
                GROUP, VERSION, VOLUME_GROUPS, name,
                _request_timeout=self.request_timeout)
        except k8s_exc.ApiException as e:
            self._raise(e)

    # Waiting.

    def wait(self, plural, name, done, timeout, gone_ok=False):
        """Waits until done(obj) is true, or raises.

        done(obj) returns True (finished), False (keep waiting) or raises to
        stop (a terminal failure). obj is None once the object is deleted:
        with gone_ok that ends the wait, otherwise it raises Gone. Raises
        Timeout with the last state seen when the deadline passes.
        """
        deadline = time.monotonic() + timeout
        obj = None
        while True:
            obj = self.find(plural, name)
            if obj is None:
                if gone_ok:
                    return None
                raise Gone(name)
            if done(obj):
                return obj
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(obj)
            rv = obj['metadata'].get('resourceVersion')
            try:
                obj = self._watch(plural, name, rv, done, left, gone_ok, obj)
            except (Gone, Timeout):
                raise
            except Exception:  # a broken stream: read again
                time.sleep(min(0.2, max(0.0, left)))
                continue
            if obj is not None or gone_ok:
                return obj

    def _watch(self, plural, name, rv, done, left, gone_ok, last):
        w = k8s_watch.Watch()
        deadline = time.monotonic() + left
        try:
            for ev in w.stream(self.api.list_namespaced_custom_object,
                               GROUP, VERSION, self.namespace, plural,
                               field_selector='metadata.name=%s' % name,
                               resource_version=rv,
                               timeout_seconds=max(1, int(left + 0.999)),
                               _request_timeout=left + 10):
                typ, obj = ev.get('type'), ev.get('object')
                if typ == 'ERROR':
                    raise RuntimeError('watch error: %s' % obj)
                if typ == 'DELETED':
                    if gone_ok:
                        return None
                    raise Gone(name)
                if typ in ('ADDED', 'MODIFIED'):
                    last = obj
                    if done(obj):
                        return obj
                if time.monotonic() >= deadline:
                    break
        finally:
            w.stop()
        if time.monotonic() >= deadline:
            raise Timeout(last)
        raise RuntimeError('watch ended early')
