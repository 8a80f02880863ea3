package controllers

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func TestPlanHostIDs(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	node := func(name string, local int32) HostIDNode { return HostIDNode{Name: name, Said: true, Local: local} }
	claim := func(id int32, n string, age int) HostIDClaim {
		return HostIDClaim{ID: id, Node: n, Created: t0.Add(time.Duration(age) * time.Second)}
	}
	goneSet := func(names ...string) func(string) bool {
		return func(n string) bool {
			for _, g := range names {
				if g == n {
					return true
				}
			}
			return false
		}
	}
	full := make([]HostIDClaim, 0, v1.MaxHostID)
	for id := int32(1); id <= v1.MaxHostID; id++ {
		full = append(full, claim(id, fmt.Sprintf("n%04d", id), 0))
	}
	cases := []struct {
		name string
		f    HostIDFacts
		want HostIDPlan
	}{
		{"nothing to do", HostIDFacts{}, HostIDPlan{}},
		{"a node that has not said its local id gets nothing",
			HostIDFacts{Nodes: []HostIDNode{{Name: "a"}}}, HostIDPlan{}},
		{"a node keeps its lvmlocal.conf id when free",
			HostIDFacts{Nodes: []HostIDNode{node("a", 7)}}, HostIDPlan{Create: []HostIDClaim{{ID: 7, Node: "a"}}}},
		{"no local id: the lowest free",
			HostIDFacts{Nodes: []HostIDNode{node("a", 0)}, Claims: []HostIDClaim{claim(1, "x", 0)}},
			HostIDPlan{Create: []HostIDClaim{{ID: 2, Node: "a"}}}},
		{"two nodes configured with one id: the first by name keeps it, the other gets the lowest free",
			HostIDFacts{Nodes: []HostIDNode{node("b", 1), node("a", 1)}},
			HostIDPlan{Create: []HostIDClaim{{ID: 1, Node: "a"}, {ID: 2, Node: "b"}}}},
		{"a local id already claimed by another node is not given again",
			HostIDFacts{Nodes: []HostIDNode{node("a", 1), node("z", 0)}, Claims: []HostIDClaim{claim(1, "b", 0), claim(2, "c", 0)}},
			HostIDPlan{Create: []HostIDClaim{{ID: 3, Node: "a"}, {ID: 4, Node: "z"}}}},
		{"a lower node's local id is not taken by a lowest-free allocation",
			HostIDFacts{Nodes: []HostIDNode{node("a", 0), node("b", 1)}},
			HostIDPlan{Create: []HostIDClaim{{ID: 1, Node: "b"}, {ID: 2, Node: "a"}}}},
		{"a node that holds a claim keeps it, whatever lvmlocal.conf says now",
			HostIDFacts{Nodes: []HostIDNode{node("a", 9)}, Claims: []HostIDClaim{claim(3, "a", 0)}}, HostIDPlan{}},
		{"an out-of-range local id counts as none",
			HostIDFacts{Nodes: []HostIDNode{node("a", 2001)}}, HostIDPlan{Create: []HostIDClaim{{ID: 1, Node: "a"}}}},
		{"a removed node's claim is released, its id not reused in the same pass",
			HostIDFacts{Nodes: []HostIDNode{node("new", 1)}, Claims: []HostIDClaim{claim(1, "old", 0)}, Gone: goneSet("old")},
			HostIDPlan{Create: []HostIDClaim{{ID: 2, Node: "new"}}, Release: []HostIDClaim{claim(1, "old", 0)}}},
		{"a removed node whose stale heartbeat is still listed gets no new claim",
			HostIDFacts{Nodes: []HostIDNode{node("old", 1)}, Claims: []HostIDClaim{claim(1, "old", 0)}, Gone: goneSet("old")},
			HostIDPlan{Release: []HostIDClaim{claim(1, "old", 0)}}},
		{"two allocators raced: the node keeps its oldest claim",
			HostIDFacts{Nodes: []HostIDNode{node("a", 0)}, Claims: []HostIDClaim{claim(1, "a", 5), claim(4, "a", 1)}},
			HostIDPlan{Release: []HostIDClaim{claim(1, "a", 5)}}},
		{"all ids taken: the node is named, nothing created",
			HostIDFacts{Nodes: []HostIDNode{node("late", 5)}, Claims: full},
			HostIDPlan{Exhausted: []string{"late"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanHostIDs(tc.f)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestPlanHostIDsManyNodesAllDistinct(t *testing.T) {
	var nodes []HostIDNode
	for i := range 300 {
		nodes = append(nodes, HostIDNode{Name: fmt.Sprintf("n%03d", i), Said: true, Local: int32(i%7) + 1})
	}
	p := PlanHostIDs(HostIDFacts{Nodes: nodes})
	seen := map[int32]string{}
	for _, c := range p.Create {
		if other, dup := seen[c.ID]; dup {
			t.Fatalf("host_id %d given to %s and %s", c.ID, other, c.Node)
		}
		seen[c.ID] = c.Node
	}
	if len(p.Create) != 300 {
		t.Fatalf("%d claims for 300 nodes", len(p.Create))
	}
}
