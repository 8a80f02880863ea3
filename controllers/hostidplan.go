package controllers

import (
	"cmp"
	"slices"
	"time"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// HostIDNode is what the operator knows of one node for host_id allocation.
type HostIDNode struct {
	Name string
	// Said: the node's heartbeat carries its lvmlocal.conf host_id (annotation
	// v1.AnnotationLocalHostID); nothing is allocated to a node before it says.
	Said bool
	// Local is that host_id, 0 when lvmlocal.conf sets none (or a value out of range).
	Local int32
}

// HostIDClaim is one allocated host_id (a Lease v1.HostIDClaimName(ID), holder Node).
type HostIDClaim struct {
	ID      int32
	Node    string
	Created time.Time
}

// HostIDFacts is what one allocation pass gathered.
type HostIDFacts struct {
	// Nodes are the nodes whose agents have a heartbeat.
	Nodes []HostIDNode
	// Claims are every claim, read live from the API (not a cache): an id another pass
	// claimed a moment ago must count as taken.
	Claims []HostIDClaim
	// Gone reports a claim holder that is removed: no Node object and no heartbeat renewed
	// within the release grace. A node that is merely down keeps its id.
	Gone func(node string) bool
}

// HostIDPlan is what the pass writes: claims to create (each an atomic create; a lost race
// is retried on the next pass) and claims to delete.
type HostIDPlan struct {
	Create  []HostIDClaim
	Release []HostIDClaim
	// Exhausted names nodes left without an id because all MaxHostID are taken.
	Exhausted []string
}

// PlanHostIDs allocates host_ids: every node that said its local id and holds no claim gets
// one; the node's own lvmlocal.conf id when no claim and no node before it (by name) takes
// it, else the lowest free id (its agent then refuses to start lockspaces until
// lvmlocal.conf agrees, naming the collision). Claims of removed nodes are released; a node
// holding several claims (two allocators raced) keeps its oldest.
func PlanHostIDs(f HostIDFacts) HostIDPlan {
	var p HostIDPlan
	taken := map[int32]bool{}
	held := map[string]bool{}
	claims := slices.Clone(f.Claims)
	slices.SortFunc(claims, func(a, b HostIDClaim) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	for _, c := range claims {
		switch {
		case gone(f, c.Node), held[c.Node]:
			p.Release = append(p.Release, c)
		default:
			held[c.Node] = true
		}
		taken[c.ID] = true // a released id is reused only once its delete is done
	}
	var want []HostIDNode
	for _, n := range f.Nodes {
		if n.Said && !held[n.Name] && !gone(f, n.Name) {
			want = append(want, n)
		}
	}
	slices.SortFunc(want, func(a, b HostIDNode) int { return cmp.Compare(a.Name, b.Name) })
	var rest []HostIDNode
	for _, n := range want {
		if n.Local >= 1 && n.Local <= v1.MaxHostID && !taken[n.Local] {
			taken[n.Local] = true
			p.Create = append(p.Create, HostIDClaim{ID: n.Local, Node: n.Name})
			continue
		}
		rest = append(rest, n)
	}
	next := int32(1)
	for _, n := range rest {
		for next <= v1.MaxHostID && taken[next] {
			next++
		}
		if next > v1.MaxHostID {
			p.Exhausted = append(p.Exhausted, n.Name)
			continue
		}
		taken[next] = true
		p.Create = append(p.Create, HostIDClaim{ID: next, Node: n.Name})
	}
	return p
}

func gone(f HostIDFacts, node string) bool { return f.Gone != nil && f.Gone(node) }
