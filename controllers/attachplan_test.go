package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// att builds an attachment created at minute age (older first), holding applied.
func att(name, node string, purpose v1.AttachmentPurpose, minute int, desired, applied v1.LockMode) v1.VolumeAttachment {
	return v1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "cloud", CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(minute) * time.Minute))},
		Spec:       v1.VolumeAttachmentSpec{Volume: "vol", Node: v1.ObjectName(node), Purpose: purpose},
		Status:     v1.VolumeAttachmentStatus{DesiredLock: desired, AppliedLock: applied},
	}
}

func deleting(a v1.VolumeAttachment) v1.VolumeAttachment {
	now := metav1.NewTime(t0.Add(time.Hour))
	a.DeletionTimestamp = &now
	return a
}

func readyVol(multi bool) *v1.SharedVolume {
	return &v1.SharedVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "vol", Namespace: "cloud"},
		Spec:       v1.SharedVolumeSpec{VolumeGroup: "cinder", MultiAttach: multi},
		Status:     v1.SharedVolumeStatus{VolumeGroup: "cinder", VGName: "cinder-volumes", LVName: "vol", LVUUID: "uuid-1"},
	}
}

func TestPlanAttachment(t *testing.T) {
	const c0, c1 = "compute-0", "compute-1"
	ok := map[string]NodeProblem{}
	failedC0 := map[string]v1.HostVerdict{c0: {Node: c0, HostID: 1, Failed: true, Since: t0, By: c1}}
	deadC0 := map[string]v1.HostVerdict{c0: {Node: c0, HostID: 1, Dead: true, Failed: false, By: c1}}
	cases := []struct {
		name     string
		self     int // index into atts
		atts     []v1.VolumeAttachment
		vol      *v1.SharedVolume
		problems map[string]NodeProblem
		verdicts map[string]v1.HostVerdict
		// want
		desired v1.LockMode
		phase   v1.AttachmentPhase
		reason  AttachReason
		msg     []string
		without []string // must not appear in the message
		release bool
	}{
		{
			name: "first attachment: exclusive",
			atts: []v1.VolumeAttachment{att("a", c0, v1.PurposeInstance, 0, "", "")},
			vol:  readyVol(false), problems: ok,
			desired: v1.LockExclusive, phase: v1.AttachmentAttaching, reason: ReasonWaitingForAgent,
		},
		{
			name: "applied: attached",
			atts: []v1.VolumeAttachment{att("a", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)},
			vol:  readyVol(false), problems: ok,
			desired: v1.LockExclusive, phase: v1.AttachmentAttached, reason: ReasonAttached,
		},
		{
			name: "no volume: nothing planned",
			atts: []v1.VolumeAttachment{att("a", c0, v1.PurposeInstance, 0, "", "")},
			vol:  nil, problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonVolumeNotFound,
		},
		{
			name: "no LV yet",
			atts: []v1.VolumeAttachment{att("a", c0, v1.PurposeInstance, 0, "", "")},
			vol: func() *v1.SharedVolume {
				v := readyVol(false)
				v.Status.LVUUID = ""
				return v
			}(), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonWaitingForVolume,
		},
		{
			// #14 item 1: the holder's host is FAIL (its agent may still report): wait, and say
			// for whom and since when.
			name: "holder's host FAIL: wait for DEAD, naming it",
			self: 1,
			atts: []v1.VolumeAttachment{
				deleting(att("old", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)),
				att("new", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: ok, verdicts: failedC0,
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonWaitingForDeadHost,
			msg: []string{"compute-0 (host_id 1) holds the lease (Exclusive)", "sanlock on compute-1 reports it FAIL since 2026-12-02T10:00:00Z", "never taken around sanlock"},
		},
		{
			name: "holder stopped reporting: wait for DEAD",
			self: 1,
			atts: []v1.VolumeAttachment{
				deleting(att("old", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)),
				att("new", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: map[string]NodeProblem{c0: {NodeStale, "stale"}},
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonWaitingForDeadHost, msg: []string{"compute-0 holds the lock (Exclusive) and has stopped reporting"},
		},
		{
			name: "holder alive: waiting for it to release, named",
			self: 1,
			atts: []v1.VolumeAttachment{
				deleting(att("old", c0, v1.PurposeInstance, 0, v1.LockNone, v1.LockExclusive)),
				att("new", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonWaitingForOtherNodes, msg: []string{"compute-0 holds the lock (Exclusive) and is asked to convert or release it"},
		},
		{
			// Seen on the bed (path loss): a node with a new attachment and no lock reported
			// yet (AppliedLock "") was named as holding the lock "()".
			name: "a newcomer holding nothing is not named as a holder",
			self: 0,
			atts: []v1.VolumeAttachment{
				deleting(att("old", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)),
				att("new", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentDetaching,
			without: []string{"()", "compute-1 holds"},
		},
		{
			// #14 item 1: DEAD counts whatever the holder's agent says (it still reports Exclusive).
			name: "holder's host DEAD: the newcomer takes the lock",
			self: 1,
			atts: []v1.VolumeAttachment{
				deleting(att("old", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)),
				att("new", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: ok, verdicts: deadC0,
			desired: v1.LockExclusive, phase: v1.AttachmentAttaching, reason: ReasonWaitingForAgent,
		},
		{
			name: "deleted attachment of a DEAD host: released (sanlock freed its lease)",
			self: 0,
			atts: []v1.VolumeAttachment{
				deleting(att("old", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)),
				att("new", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: ok, verdicts: deadC0,
			desired: v1.LockNone, phase: v1.AttachmentDetaching, release: true,
		},
		{
			name: "deleted attachment of a FAIL host: kept until DEAD",
			self: 0,
			atts: []v1.VolumeAttachment{
				deleting(att("old", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)),
				att("new", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: ok, verdicts: failedC0,
			desired: v1.LockNone, phase: v1.AttachmentDetaching, release: false,
		},
		{
			name: "live attachment of a DEAD host: says its host lost the lockspace",
			atts: []v1.VolumeAttachment{att("a", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive)},
			vol:  readyVol(false), problems: ok, verdicts: deadC0,
			desired: v1.LockExclusive, phase: v1.AttachmentPending, reason: ReasonHostLostLockspace,
			msg: []string{"compute-0 (host_id 1) lost its lockspace of VG cinder-volumes", "sanlock on compute-1 declares host_id 1 DEAD"},
		},
		{
			// #14 item 2: a node that does not exist is never planned, and the holder is not
			// converted to shared because of it.
			name: "attachment on a node that does not exist: not planned, holder stays exclusive",
			self: 0,
			atts: []v1.VolumeAttachment{
				att("a", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive),
				att("b", "nosuchnode", v1.PurposeMigrationTarget, 1, "", ""),
			},
			vol: readyVol(false), problems: map[string]NodeProblem{"nosuchnode": {NodeMissing, "node nosuchnode does not exist"}},
			desired: v1.LockExclusive, phase: v1.AttachmentAttached, reason: ReasonAttached,
		},
		{
			name: "the same, seen from the missing node",
			self: 1,
			atts: []v1.VolumeAttachment{
				att("a", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive),
				att("b", "nosuchnode", v1.PurposeMigrationTarget, 1, "", ""),
			},
			vol: readyVol(false), problems: map[string]NodeProblem{"nosuchnode": {NodeMissing, "node nosuchnode does not exist"}},
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonNodeNotReady, msg: []string{"does not exist"},
		},
		{
			// #14 item 2: the VolumeGroup is gone: fail closed for every new attachment.
			name: "VolumeGroup missing: a new holder is never planned",
			self: 0,
			atts: []v1.VolumeAttachment{
				att("a", c1, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive),
				att("b", c0, v1.PurposeMigrationTarget, 1, "", ""),
			},
			vol: readyVol(false), problems: map[string]NodeProblem{c0: {NodeVGMissing, "VolumeGroup \"cinder\" does not exist"}, c1: {NodeVGMissing, "VolumeGroup \"cinder\" does not exist"}},
			desired: v1.LockExclusive, phase: v1.AttachmentPending, reason: ReasonNodeNotReady,
		},
		{
			// #14 item 3: after a live migration the target is the instance.
			name: "a migration target left alone is the instance: exclusive",
			atts: []v1.VolumeAttachment{att("t", c1, v1.PurposeMigrationTarget, 1, v1.LockShared, v1.LockShared)},
			vol:  readyVol(false), problems: ok,
			desired: v1.LockExclusive, phase: v1.AttachmentAttaching, reason: ReasonWaitingForAgent,
		},
		{
			name: "the next live migration from it is accepted (holder converts first)",
			self: 1,
			atts: []v1.VolumeAttachment{
				att("t", c1, v1.PurposeMigrationTarget, 1, v1.LockExclusive, v1.LockExclusive),
				att("back", c0, v1.PurposeMigrationTarget, 2, "", ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonWaitingForOtherNodes,
		},
		{
			name: "and its holder is asked to convert to shared",
			self: 0,
			atts: []v1.VolumeAttachment{
				att("t", c1, v1.PurposeMigrationTarget, 1, v1.LockExclusive, v1.LockExclusive),
				att("back", c0, v1.PurposeMigrationTarget, 2, "", ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockShared, phase: v1.AttachmentAttaching, reason: ReasonWaitingForAgent,
		},
		{
			name: "a second instance elsewhere is refused while the first lives",
			self: 1,
			atts: []v1.VolumeAttachment{
				att("a", c0, v1.PurposeInstance, 0, v1.LockExclusive, v1.LockExclusive),
				att("b", c1, v1.PurposeInstance, 1, "", ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentFailed, reason: ReasonMultiAttachNotAllowed, msg: []string{"proceeds by itself"},
		},
		{
			name: "and proceeds once the first is gone",
			self: 1,
			atts: []v1.VolumeAttachment{
				deleting(att("a", c0, v1.PurposeInstance, 0, v1.LockNone, v1.LockNone)),
				att("b", c1, v1.PurposeInstance, 1, v1.LockNone, ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockExclusive, phase: v1.AttachmentAttaching, reason: ReasonWaitingForAgent,
		},
		{
			name: "a second migration target is refused",
			self: 2,
			atts: []v1.VolumeAttachment{
				att("a", c0, v1.PurposeInstance, 0, v1.LockShared, v1.LockShared),
				att("t1", c1, v1.PurposeMigrationTarget, 1, v1.LockShared, v1.LockShared),
				att("t2", "compute-2", v1.PurposeMigrationTarget, 2, "", ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentFailed, reason: ReasonMultiAttachNotAllowed,
		},
		{
			name: "copies are always allowed (shared with the holder)",
			self: 1,
			atts: []v1.VolumeAttachment{
				att("a", c0, v1.PurposeInstance, 0, v1.LockShared, v1.LockShared),
				att("copy", c1, v1.PurposeCopy, 1, v1.LockShared, ""),
			},
			vol: readyVol(false), problems: ok,
			desired: v1.LockShared, phase: v1.AttachmentAttaching, reason: ReasonWaitingForAgent,
		},
		{
			name: "multi-attach: both shared",
			self: 1,
			atts: []v1.VolumeAttachment{
				att("a", c0, v1.PurposeInstance, 0, v1.LockShared, v1.LockShared),
				att("b", c1, v1.PurposeInstance, 1, v1.LockShared, v1.LockShared),
			},
			vol: readyVol(true), problems: ok,
			desired: v1.LockShared, phase: v1.AttachmentAttached, reason: ReasonAttached,
		},
		{
			name: "multi-attach with a DEAD holder: the other keeps shared",
			self: 1,
			atts: []v1.VolumeAttachment{
				att("a", c0, v1.PurposeInstance, 0, v1.LockShared, v1.LockShared),
				att("b", c1, v1.PurposeInstance, 1, v1.LockShared, v1.LockShared),
			},
			vol: readyVol(true), problems: ok, verdicts: deadC0,
			desired: v1.LockShared, phase: v1.AttachmentAttached, reason: ReasonAttached,
		},
		{
			name: "volume being deleted",
			atts: []v1.VolumeAttachment{att("a", c0, v1.PurposeInstance, 0, "", "")},
			vol: func() *v1.SharedVolume {
				v := readyVol(false)
				now := metav1.NewTime(t0)
				v.DeletionTimestamp = &now
				return v
			}(), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentFailed, reason: ReasonVolumeDeleting,
		},
		{
			name: "volume migrating between VGs: a new attachment waits",
			atts: []v1.VolumeAttachment{att("a", c0, v1.PurposeInstance, 0, "", "")},
			vol: func() *v1.SharedVolume {
				v := readyVol(false)
				v.Spec.VolumeGroup = "other"
				return v
			}(), problems: ok,
			desired: v1.LockNone, phase: v1.AttachmentPending, reason: ReasonVolumeMigrating,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			verdicts := tc.verdicts
			if verdicts == nil {
				verdicts = map[string]v1.HostVerdict{}
			}
			self := tc.atts[tc.self]
			p := PlanAttachment(AttachmentFacts{Att: &self, Siblings: tc.atts, Vol: tc.vol, VGName: "cinder-volumes", Problems: tc.problems, Verdicts: verdicts}, t0)
			if p.Desired != tc.desired || p.Phase != tc.phase || p.Release != tc.release {
				t.Fatalf("plan %+v, want desired %s phase %s release %v", p, tc.desired, tc.phase, tc.release)
			}
			if tc.reason != "" && p.Reason != tc.reason {
				t.Fatalf("reason %s (%s), want %s", p.Reason, p.Message, tc.reason)
			}
			for _, m := range tc.msg {
				if !strings.Contains(p.Message, m) {
					t.Errorf("message %q lacks %q", p.Message, m)
				}
			}
			for _, m := range tc.without {
				if strings.Contains(p.Message, m) {
					t.Errorf("message %q has %q", p.Message, m)
				}
			}
		})
	}
}

// TestMigrateBackAndForth runs live migrations A→B→A→B through the plan (the agents'
// handshake played by applying every desired lock), with no edit of any attachment (#14
// item 3), and checks the locks at every settled step.
func TestMigrateBackAndForth(t *testing.T) {
	vol := readyVol(false)
	atts := []v1.VolumeAttachment{att("a0", "A", v1.PurposeInstance, 0, "", "")}
	settle := func() map[string]v1.LockMode {
		for range 10 {
			changed := false
			for i := range atts {
				p := PlanAttachment(AttachmentFacts{Att: &atts[i], Siblings: atts, Vol: vol, Problems: map[string]NodeProblem{}, Verdicts: map[string]v1.HostVerdict{}}, t0)
				if p.Phase == v1.AttachmentFailed {
					t.Fatalf("%s failed: %s", atts[i].Name, p.Message)
				}
				if p.Release {
					atts = append(atts[:i], atts[i+1:]...)
					changed = true
					break
				}
				if atts[i].Status.AppliedLock != p.Desired || atts[i].Status.DesiredLock != p.Desired {
					atts[i].Status.DesiredLock, atts[i].Status.AppliedLock = p.Desired, p.Desired
					changed = true
				}
			}
			if !changed {
				break
			}
		}
		held := map[string]v1.LockMode{}
		for _, a := range atts {
			if m := a.Status.AppliedLock.OrNone(); m != v1.LockNone {
				held[string(a.Spec.Node)] = m
			}
		}
		return held
	}
	expect := func(step string, got, want map[string]v1.LockMode) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: holders %v, want %v", step, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: holders %v, want %v", step, got, want)
			}
		}
	}
	expect("attach on A", settle(), map[string]v1.LockMode{"A": v1.LockExclusive})
	from, to := "A", "B"
	for i := 1; i <= 3; i++ {
		atts = append(atts, att("m"+to+string(rune('0'+i)), to, v1.PurposeMigrationTarget, i, "", ""))
		expect("target on "+to, settle(), map[string]v1.LockMode{from: v1.LockShared, to: v1.LockShared})
		for j := range atts {
			if string(atts[j].Spec.Node) == from {
				atts[j] = deleting(atts[j])
			}
		}
		expect("source "+from+" gone", settle(), map[string]v1.LockMode{to: v1.LockExclusive})
		from, to = to, from
	}
}
