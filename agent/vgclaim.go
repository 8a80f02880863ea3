package agent

import (
	"context"
	"fmt"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// VGCreateClaim is the create-once claim of one VolumeGroup's VG, a coordination Lease
// written with optimistic concurrency against the API (never the cache):
//   - the first node to create the Lease holds it (creation is atomic: the other gets
//     AlreadyExists);
//   - the holder renews it while it works and keeps it once the VG exists (the Lease then
//     records who created it);
//   - another node takes it over only once it has expired (its holder stopped renewing for
//     TTL), with an update conditioned on the resourceVersion it read;
//   - Fence re-reads it right before vgcreate: held by this node, at the version this node
//     wrote, unexpired. Anything else means "do not run the command".
type VGCreateClaim struct {
	Client client.Client
	// Reader reads the Lease live (the API reader; the agent's cache holds no such Lease).
	Reader    client.Reader
	Namespace string
	Node      string
	TTL       time.Duration
	Now       func() time.Time
}

// DefaultVGCreateClaimTTL: a claim not renewed for this long may be taken over. vgcreate
// takes seconds (12 s on the test bed); the holder renews during it.
const DefaultVGCreateClaimTTL = 2 * time.Minute

func (c *VGCreateClaim) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *VGCreateClaim) ttl() time.Duration {
	if c.TTL > 0 {
		return c.TTL
	}
	return DefaultVGCreateClaimTTL
}

// ClaimHeldError says which node holds a VolumeGroup's create claim.
type ClaimHeldError struct {
	Holder  string
	Expires time.Time
}

func (e *ClaimHeldError) Error() string {
	return fmt.Sprintf("node %s holds the create claim (it may be running vgcreate; it can be taken over after %s if it stops renewing)", e.Holder, e.Expires.UTC().Format(time.RFC3339))
}

// Acquire takes or renews the claim for vg. It returns the Lease as written (for Fence), or
// a *ClaimHeldError when another node holds it unexpired; a lost race is such an error too.
func (c *VGCreateClaim) Acquire(ctx context.Context, vg string) (*coordv1.Lease, error) {
	key := client.ObjectKey{Namespace: c.Namespace, Name: v1.VGCreateClaimName(vg)}
	now := metav1.NewMicroTime(c.now())
	set := func(l *coordv1.Lease) {
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != c.Node {
			l.Spec.AcquireTime = &now
			l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
		}
		l.Spec.HolderIdentity = ptr.To(c.Node)
		l.Spec.LeaseDurationSeconds = ptr.To(int32(c.ttl() / time.Second))
		l.Spec.RenewTime = &now
		if l.Labels == nil {
			l.Labels = map[string]string{}
		}
		l.Labels["sharedlvm.io/vgcreate-claim"] = "true"
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations["sharedlvm.io/volumegroup"] = vg
	}
	var l coordv1.Lease
	err := c.Reader.Get(ctx, key, &l)
	switch {
	case apierrors.IsNotFound(err):
		l = coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		set(&l)
		l.Spec.LeaseTransitions = ptr.To[int32](0)
		if err := c.Client.Create(ctx, &l); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil, c.heldBy(ctx, key)
			}
			return nil, err
		}
		return &l, nil
	case err != nil:
		return nil, err
	}
	if holder := ptr.Deref(l.Spec.HolderIdentity, ""); holder != c.Node && !c.expired(&l) {
		return nil, &ClaimHeldError{Holder: holder, Expires: c.expiry(&l)}
	}
	set(&l)
	if err := c.Client.Update(ctx, &l); err != nil { // conditioned on the version read
		if apierrors.IsConflict(err) {
			return nil, c.heldBy(ctx, key)
		}
		return nil, err
	}
	return &l, nil
}

func (c *VGCreateClaim) heldBy(ctx context.Context, key client.ObjectKey) error {
	var l coordv1.Lease
	if err := c.Reader.Get(ctx, key, &l); err != nil {
		return fmt.Errorf("lost the race for the create claim: %w", err)
	}
	return &ClaimHeldError{Holder: ptr.Deref(l.Spec.HolderIdentity, ""), Expires: c.expiry(&l)}
}

func (c *VGCreateClaim) expiry(l *coordv1.Lease) time.Time {
	if l.Spec.RenewTime == nil {
		return time.Time{}
	}
	return l.Spec.RenewTime.Add(time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 0)) * time.Second)
}

func (c *VGCreateClaim) expired(l *coordv1.Lease) bool { return !c.now().Before(c.expiry(l)) }

// Fence checks, with a live read, that the claim written by Acquire is still this node's,
// unchanged since and unexpired: the last check before the command that must run once.
func (c *VGCreateClaim) Fence(ctx context.Context, held *coordv1.Lease) error {
	var l coordv1.Lease
	if err := c.Reader.Get(ctx, client.ObjectKeyFromObject(held), &l); err != nil {
		return fmt.Errorf("create claim cannot be read before vgcreate: %w", err)
	}
	switch {
	case ptr.Deref(l.Spec.HolderIdentity, "") != c.Node:
		return &ClaimHeldError{Holder: ptr.Deref(l.Spec.HolderIdentity, ""), Expires: c.expiry(&l)}
	case l.ResourceVersion != held.ResourceVersion:
		return fmt.Errorf("create claim changed since this node took it (version %s, now %s)", held.ResourceVersion, l.ResourceVersion)
	case c.expired(&l):
		return fmt.Errorf("create claim expired at %s before vgcreate could start", c.expiry(&l).UTC().Format(time.RFC3339))
	}
	return nil
}

// KeepRenewed renews the claim every TTL/4 until stop is closed (while vgcreate runs).
func (c *VGCreateClaim) KeepRenewed(ctx context.Context, vg string, stop <-chan struct{}) {
	t := time.NewTicker(c.ttl() / 4)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = c.Acquire(ctx, vg)
		}
	}
}
