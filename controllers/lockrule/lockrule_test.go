package lockrule

import (
	"fmt"
	"reflect"
	"testing"
)

// grantable mirrors what sanlock/lvmlockd accept (docs/design.md §7, seen on the bed):
// releasing always works; ex needs no other holder; sh needs no other ex holder.
func grantable(nodes []Node, name string, want Mode) bool {
	for _, o := range nodes {
		if o.Name == name || o.Held == None {
			continue
		}
		switch want {
		case Exclusive:
			return false
		case Shared:
			if o.Held == Exclusive {
				return false
			}
		}
	}
	return true
}

func safe(nodes []Node) error {
	ex, sh := 0, 0
	for _, n := range nodes {
		switch n.Held {
		case Exclusive:
			ex++
		case Shared:
			sh++
		}
	}
	if ex > 1 || (ex == 1 && sh > 0) {
		return fmt.Errorf("unsafe lock state %+v", nodes)
	}
	return nil
}

var modes = []Mode{None, Exclusive, Shared}

// every combination of up to 4 nodes, each wanted or not and holding any mode that is a
// safe starting point, converges to Target without a single refused request, whatever
// order the agents apply their steps in, and without ever passing through an unsafe state.
func TestPlanExhaustive(t *testing.T) {
	cases := 0
	for n := 0; n <= 4; n++ {
		total := 1
		for i := 0; i < n; i++ {
			total *= 6
		}
		for code := 0; code < total; code++ {
			nodes := make([]Node, n)
			c := code
			for i := range nodes {
				nodes[i] = Node{Name: fmt.Sprintf("n%d", i), Wanted: c%2 == 1, Held: modes[(c/2)%3]}
				c /= 6
			}
			if safe(nodes) != nil {
				continue
			}
			cases++
			for _, reverse := range []bool{false, true} {
				converge(t, clone(nodes), reverse)
			}
		}
	}
	if cases < 400 { // 439 safe starting states for 0..4 nodes
		t.Fatalf("only %d cases enumerated", cases)
	}
}

func clone(n []Node) []Node { return append([]Node(nil), n...) }

func converge(t *testing.T, nodes []Node, reverse bool) {
	t.Helper()
	start := clone(nodes)
	for step := 0; step < 3; step++ {
		if Settled(nodes) {
			return
		}
		plan := Plan(nodes)
		order := make([]int, len(nodes))
		for i := range order {
			order[i] = i
			if reverse {
				order[i] = len(nodes) - 1 - i
			}
		}
		for _, i := range order {
			want := plan[nodes[i].Name]
			if want == nodes[i].Held {
				continue
			}
			if !grantable(nodes, nodes[i].Name, want) {
				t.Fatalf("from %+v: step %d asks %s for %q, which sanlock refuses in %+v", start, step, nodes[i].Name, want, nodes)
			}
			nodes[i].Held = want
			if err := safe(nodes); err != nil {
				t.Fatalf("from %+v: %v", start, err)
			}
		}
	}
	if !Settled(nodes) {
		t.Fatalf("from %+v: not settled after 3 steps: %+v (target %v)", start, nodes, Target(nodes))
	}
}

func TestPlanOrdering(t *testing.T) {
	tests := []struct {
		name  string
		nodes []Node
		want  map[string]Mode
	}{
		{"no attachments releases everything",
			[]Node{{"a", false, Exclusive}, {"b", false, None}},
			map[string]Mode{"a": None, "b": None}},
		{"single attachment is exclusive",
			[]Node{{"a", true, None}},
			map[string]Mode{"a": Exclusive}},
		{"live migration starts: holder converts first, newcomer waits",
			[]Node{{"a", true, Exclusive}, {"b", true, None}},
			map[string]Mode{"a": Shared, "b": None}},
		{"live migration: newcomer activates shared once holder is shared",
			[]Node{{"a", true, Shared}, {"b", true, None}},
			map[string]Mode{"a": Shared, "b": Shared}},
		{"source leaves: leaver releases, stayer keeps shared",
			[]Node{{"a", false, Shared}, {"b", true, Shared}},
			map[string]Mode{"a": None, "b": Shared}},
		{"source gone: stayer converts to exclusive",
			[]Node{{"a", false, None}, {"b", true, Shared}},
			map[string]Mode{"a": None, "b": Exclusive}},
		{"cold migration: new node waits for the old one to release",
			[]Node{{"a", false, Exclusive}, {"b", true, None}},
			map[string]Mode{"a": None, "b": None}},
		{"three-way multi-attach",
			[]Node{{"a", true, Shared}, {"b", true, Shared}, {"c", true, None}},
			map[string]Mode{"a": Shared, "b": Shared, "c": Shared}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(tt.nodes)
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("node %s: got %q, want %q (plan %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func TestHolders(t *testing.T) {
	mode, names := Holders([]Node{{"b", true, Shared}, {"a", true, Shared}, {"c", false, None}})
	if mode != Shared || len(names) != 2 || names[0] != "a" {
		t.Fatalf("got %q %v", mode, names)
	}
	mode, names = Holders([]Node{{"c", false, None}})
	if mode != None || len(names) != 0 {
		t.Fatalf("got %q %v", mode, names)
	}
}

// An unset Held (a node whose attachment has not reported yet) is None in every function.
func TestUnsetHeldIsNone(t *testing.T) {
	unset := []Node{{Name: "a", Wanted: true}, {Name: "b", Wanted: true, Held: Exclusive}}
	none := []Node{{Name: "a", Wanted: true, Held: None}, {Name: "b", Wanted: true, Held: Exclusive}}
	if got, want := Plan(unset), Plan(none); !reflect.DeepEqual(got, want) {
		t.Fatalf("Plan: unset %v, None %v", got, want)
	}
	if Settled(unset) != Settled(none) {
		t.Fatal("Settled differs")
	}
	m1, h1 := Holders(unset)
	m2, h2 := Holders(none)
	if m1 != m2 || !reflect.DeepEqual(h1, h2) || m1 != Exclusive {
		t.Fatalf("Holders: unset %v %v, None %v %v", m1, h1, m2, h2)
	}
	if m, _ := Holders(nil); m != None {
		t.Fatalf("no holder: mode %q, want None", m)
	}
}
