package agent

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// IndexVolumeLVUUID indexes SharedVolumes by status.lvUUID (drift: lease → volume).
const IndexVolumeLVUUID = "status.lvUUID"

// SetupIndexes registers the agent's field indexes.
func SetupIndexes(ctx context.Context, mgr manager.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &v1.SharedVolume{}, IndexVolumeLVUUID, func(o client.Object) []string {
		if u := o.(*v1.SharedVolume).Status.LVUUID; u != "" {
			return []string{u}
		}
		return nil
	})
}
