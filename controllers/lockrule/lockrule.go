// Package lockrule is the lock rule of docs/design.md §2 in one function: from the attachments
// of one volume and the lock each node was last seen holding, it computes the lock each
// node should hold next. It orders transitions so that sanlock never has to refuse a step:
//
//   - 1 → 2 nodes: the exclusive holder converts ex→sh in place before a newcomer activates sh;
//   - 2 → 1 nodes: every leaver deactivates before the stayer converts sh→ex;
//   - a node leaving always releases at once (releasing can never conflict).
//
// The operator calls Plan on every change and writes the result as each attachment's
// desired lock; it never has to remember which step it is in, because the step follows
// from what the agents have reported (the status handshake).
package lockrule

import (
	"sort"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// Mode is the API's lock mode (one vocabulary from the API to the agent's command edge);
// an unset Held ("") counts as None.
type Mode = v1.LockMode

const (
	None      = v1.LockNone
	Exclusive = v1.LockExclusive
	Shared    = v1.LockShared
)

// normal returns the nodes with every Held read through OrNone.
func normal(nodes []Node) []Node {
	out := make([]Node, len(nodes))
	for i, n := range nodes {
		n.Held = n.Held.OrNone()
		out[i] = n
	}
	return out
}

// Node is one node's view of a volume.
type Node struct {
	// Name of the node.
	Name string
	// Wanted is true when at least one live (not deleting) attachment of the volume is on
	// this node. Several attachments on one node count once: locks are per node.
	Wanted bool
	// Held is the lock the node's agent last reported holding (read from sanlock). A node
	// whose agent has not reported, or is unreachable, must be reported with the last mode
	// seen: the rule is only safe if Held never understates what a node might hold.
	Held Mode
}

// Target is the mode a node must hold once the volume has settled: none when unwanted,
// exclusive when it is the only wanted node, shared when several are.
func Target(nodes []Node) map[string]Mode {
	wanted := 0
	for _, n := range nodes {
		if n.Wanted {
			wanted++
		}
	}
	out := make(map[string]Mode, len(nodes))
	for _, n := range nodes {
		switch {
		case !n.Wanted:
			out[n.Name] = None
		case wanted == 1:
			out[n.Name] = Exclusive
		default:
			out[n.Name] = Shared
		}
	}
	return out
}

// Plan returns the lock each node should hold in the next step. Applying every returned
// mode (in any order, concurrently) is never refused by sanlock given the Held modes, and
// repeating Plan with the resulting Held modes reaches Target in at most two steps.
func Plan(nodes []Node) map[string]Mode {
	nodes = normal(nodes)
	target := Target(nodes)
	out := make(map[string]Mode, len(nodes))
	for _, n := range nodes {
		othersEx, othersAny := false, false
		for _, o := range nodes {
			if o.Name == n.Name {
				continue
			}
			othersEx = othersEx || o.Held == Exclusive
			othersAny = othersAny || o.Held != None
		}
		switch t := target[n.Name]; {
		case t == None:
			out[n.Name] = None // release first: it can never conflict
		case t == Shared && n.Held == None && othersEx:
			out[n.Name] = None // wait for the exclusive holder to convert ex→sh
		case t == Shared:
			out[n.Name] = Shared // sh stays; ex→sh converts in place
		case t == Exclusive && n.Held != Exclusive && othersAny:
			out[n.Name] = n.Held // wait for the others to release before sh→ex / none→ex
		default:
			out[n.Name] = Exclusive
		}
	}
	return out
}

// Settled reports whether every node holds its target mode.
func Settled(nodes []Node) bool {
	nodes = normal(nodes)
	target := Target(nodes)
	for _, n := range nodes {
		if n.Held != target[n.Name] {
			return false
		}
	}
	return true
}

// Holders lists the nodes that hold any lock, sorted, and the volume-wide mode.
func Holders(nodes []Node) (Mode, []string) {
	nodes = normal(nodes)
	var names []string
	mode := None
	for _, n := range nodes {
		if n.Held == None {
			continue
		}
		names = append(names, n.Name)
		if mode == None || n.Held == Shared {
			mode = n.Held
		}
	}
	sort.Strings(names)
	return mode, names
}
