// Package plugin is `kubectl sharedlvm`: the views an admin needs of shared-LVM lock state,
// read from the custom resources (what the agents read back from sanlock and LVM on each
// node), cluster-wide, without logging in to any host.
package plugin

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
)

// Usage is the plugin's help text.
const Usage = `usage: kubectl sharedlvm COMMAND [flags]

commands:
  locks [--node N] [-n NAMESPACE]   the sanlock leases each node holds, cluster-wide: volume,
                                    LV UUID, mode, holders, lease offset (as sanlock client
                                    status shows them on the nodes)
  vg [NAME]                         volume groups: size, free, PVs, LVs, lockspace per node
  restore-status                    each node's lock restore for its current boot

flags (every command):
  -o table|wide|json|yaml           output format (default table)
  --kubeconfig PATH                 as kubectl (default $KUBECONFIG or ~/.kube/config)
`

// LockRow is one lease a node holds.
type LockRow struct {
	Node        string   `json:"node"`
	Namespace   string   `json:"namespace"`
	Volume      string   `json:"volume"`
	Attachment  string   `json:"attachment"`
	VG          string   `json:"vg"`
	LV          string   `json:"lv"`
	LVUUID      string   `json:"lvUUID"`
	Mode        string   `json:"mode"`
	Holders     []string `json:"holders"`
	LeaseOffset *int64   `json:"leaseOffset,omitempty"`
	Device      string   `json:"device,omitempty"`
}

// VGRow is one VolumeGroup with its per-node lockspaces.
type VGRow struct {
	Name       string         `json:"name"`
	VGName     string         `json:"vgName"`
	UUID       string         `json:"uuid,omitempty"`
	Size       string         `json:"size,omitempty"`
	Free       string         `json:"free,omitempty"`
	PVs        []string       `json:"pvs"`
	LVs        int32          `json:"lvs"`
	NodesReady string         `json:"nodesReady,omitempty"`
	Nodes      []LockspaceRow `json:"nodes"`
}

// LockspaceRow is one node's lockspace of a VG.
type LockspaceRow struct {
	Node       string `json:"node"`
	HostID     int32  `json:"hostID,omitempty"`
	Started    bool   `json:"lockspaceStarted"`
	LastReport string `json:"lastReport,omitempty"`
	Message    string `json:"message,omitempty"`
}

// RestoreRow is one node's restore state.
type RestoreRow struct {
	Node          string `json:"node"`
	BootID        string `json:"bootID,omitempty"`
	RestoredBoot  string `json:"restoredForBoot,omitempty"`
	Restored      bool   `json:"restored"`
	Tainted       bool   `json:"startupTaint"`
	Condition     string `json:"condition,omitempty"`
	Message       string `json:"message,omitempty"`
	LastChangeAgo string `json:"lastChange,omitempty"`
}

// Run executes one plugin command against c, writing to out.
func Run(ctx context.Context, c client.Reader, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("no command\n%s", Usage)
	}
	command, rest := args[0], args[1:]
	fs := flag.NewFlagSet("kubectl sharedlvm "+command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	output := fs.String("o", "table", "output format")
	node := fs.String("node", "", "only this node")
	ns := fs.String("n", "", "only this namespace")
	fs.String("kubeconfig", "", "kubeconfig (read by the caller)")
	// Flags may follow positional arguments, as with kubectl.
	var positional []string
	for {
		if err := fs.Parse(rest); err != nil {
			return fmt.Errorf("%v\n%s", err, Usage)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch *output {
	case "table", "wide", "json", "yaml":
	default:
		return fmt.Errorf("unknown output format %q: use table, wide, json or yaml", *output)
	}
	switch command {
	case "locks":
		rows, err := Locks(ctx, c, *node, *ns)
		if err != nil {
			return err
		}
		return render(out, *output, rows, func(w *tabwriter.Writer, wide bool) {
			fmt.Fprintln(w, "NODE\tVOLUME\tVG/LV\tLV UUID\tMODE\tHOLDERS\tLEASE OFFSET"+map[bool]string{true: "\tATTACHMENT\tDEVICE", false: ""}[wide])
			for _, r := range rows {
				line := fmt.Sprintf("%s\t%s/%s\t%s/%s\t%s\t%s\t%s\t%s", r.Node, r.Namespace, r.Volume, r.VG, r.LV, r.LVUUID, r.Mode, strings.Join(r.Holders, ","), offset(r.LeaseOffset))
				if wide {
					line += "\t" + r.Attachment + "\t" + r.Device
				}
				fmt.Fprintln(w, line)
			}
		})
	case "vg":
		name := ""
		if len(positional) > 0 {
			name = positional[0]
		}
		rows, err := VGs(ctx, c, name)
		if err != nil {
			return err
		}
		return render(out, *output, rows, func(w *tabwriter.Writer, wide bool) {
			fmt.Fprintln(w, "NAME\tVG\tSIZE\tFREE\tLVS\tPVS\tNODES READY")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Name, r.VGName, r.Size, r.Free, r.LVs, strings.Join(r.PVs, ","), r.NodesReady)
			}
			fmt.Fprintln(w, "\nVG\tNODE\tHOST ID\tLOCKSPACE\tLAST REPORT"+map[bool]string{true: "\tMESSAGE", false: ""}[wide])
			for _, r := range rows {
				for _, n := range r.Nodes {
					state := "stopped"
					if n.Started {
						state = "started"
					}
					line := fmt.Sprintf("%s\t%s\t%d\t%s\t%s", r.Name, n.Node, n.HostID, state, n.LastReport)
					if wide {
						line += "\t" + n.Message
					}
					fmt.Fprintln(w, line)
				}
			}
		})
	case "restore-status":
		rows, err := Restores(ctx, c, *node)
		if err != nil {
			return err
		}
		return render(out, *output, rows, func(w *tabwriter.Writer, wide bool) {
			fmt.Fprintln(w, "NODE\tRESTORED\tBOOT ID\tRESTORED FOR BOOT\tSTARTUP TAINT\tREASON"+map[bool]string{true: "\tMESSAGE", false: ""}[wide])
			for _, r := range rows {
				line := fmt.Sprintf("%s\t%v\t%s\t%s\t%v\t%s", r.Node, r.Restored, short(r.BootID), short(r.RestoredBoot), r.Tainted, r.Condition)
				if wide {
					line += "\t" + r.Message
				}
				fmt.Fprintln(w, line)
			}
		})
	case "help", "-h", "--help":
		_, err := fmt.Fprint(out, Usage)
		return err
	}
	return fmt.Errorf("unknown command %q\n%s", command, Usage)
}

func offset(o *int64) string {
	if o == nil {
		return "-"
	}
	return strconv.FormatInt(*o, 10)
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	if id == "" {
		return "-"
	}
	return id
}

func render[T any](out io.Writer, format string, rows []T, table func(*tabwriter.Writer, bool)) error {
	if rows == nil {
		rows = []T{}
	}
	switch format {
	case "json":
		b, err := json.MarshalIndent(map[string]any{"items": rows}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(map[string]any{"items": rows})
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	table(w, format == "wide")
	return w.Flush()
}

// Locks lists the leases nodes hold, from the attachments' appliedLock (read back from
// sanlock by each node's agent) joined with their volumes' LV identity.
func Locks(ctx context.Context, c client.Reader, node, namespace string) ([]LockRow, error) {
	var atts v1.VolumeAttachmentList
	var opts []client.ListOption
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := c.List(ctx, &atts, opts...); err != nil {
		return nil, err
	}
	var vols v1.SharedVolumeList
	if err := c.List(ctx, &vols, opts...); err != nil {
		return nil, err
	}
	volByKey := map[string]*v1.SharedVolume{}
	for i := range vols.Items {
		volByKey[vols.Items[i].Namespace+"/"+vols.Items[i].Name] = &vols.Items[i]
	}
	seen := map[string]bool{} // one lease per node and LV, however many attachments share it
	var rows []LockRow
	for _, a := range atts.Items {
		if a.Status.AppliedLock.OrNone() == v1.LockNone {
			continue
		}
		if node != "" && string(a.Spec.Node) != node {
			continue
		}
		r := LockRow{Node: string(a.Spec.Node), Namespace: a.Namespace, Volume: string(a.Spec.Volume), Attachment: a.Name,
			LVUUID: a.Status.LVUUID, Mode: string(a.Status.AppliedLock), Device: a.Status.DevicePath}
		if v := volByKey[a.Namespace+"/"+string(a.Spec.Volume)]; v != nil {
			r.VG, r.LV, r.Holders, r.LeaseOffset = v.Status.VGName, v.Status.LVName, v.Status.Lock.Holders, v.Status.LeaseOffset
			if r.LVUUID == "" {
				r.LVUUID = v.Status.LVUUID
			}
		}
		key := r.Node + "/" + r.LVUUID
		if seen[key] {
			continue
		}
		seen[key] = true
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Node != rows[j].Node {
			return rows[i].Node < rows[j].Node
		}
		return rows[i].Namespace+"/"+rows[i].Volume < rows[j].Namespace+"/"+rows[j].Volume
	})
	return rows, nil
}

// VGs lists VolumeGroups (one, if name is set) with their lockspace on every node.
func VGs(ctx context.Context, c client.Reader, name string) ([]VGRow, error) {
	var items []v1.VolumeGroup
	if name != "" {
		var g v1.VolumeGroup
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &g); err != nil {
			return nil, err
		}
		items = []v1.VolumeGroup{g}
	} else {
		var list v1.VolumeGroupList
		if err := c.List(ctx, &list); err != nil {
			return nil, err
		}
		items = list.Items
	}
	// Liveness is the agents' heartbeat Leases (an entry is rewritten only when it changes);
	// without the right to read them, the entries' own times are shown.
	hb, err := heartbeat.List(ctx, c, heartbeat.DefaultNamespace)
	if err != nil {
		hb = nil
	}
	rows := make([]VGRow, 0, len(items))
	for _, g := range items {
		hb.Overlay(&g)
		r := VGRow{Name: g.Name, VGName: string(g.Spec.VGName), UUID: g.Status.VGUUID, LVs: g.Status.LVCount, NodesReady: g.Status.NodesReady}
		if g.Status.Size != nil {
			r.Size = g.Status.Size.String()
		}
		if g.Status.Free != nil {
			r.Free = g.Status.Free.String()
		}
		for _, p := range g.Spec.PVs {
			r.PVs = append(r.PVs, string(p))
		}
		for _, n := range g.Status.Nodes {
			l := LockspaceRow{Node: n.Node, HostID: n.HostID, Started: n.LockspaceStarted, Message: n.Message}
			if n.LastReport != nil {
				l.LastReport = time.Since(n.LastReport.Time).Round(time.Second).String() + " ago"
			}
			r.Nodes = append(r.Nodes, l)
		}
		sort.Slice(r.Nodes, func(i, j int) bool { return r.Nodes[i].Node < r.Nodes[j].Node })
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

// Restores lists every node's lock restore for its current boot (label, annotation,
// condition and startup taint the agent maintains).
func Restores(ctx context.Context, c client.Reader, node string) ([]RestoreRow, error) {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return nil, err
	}
	var rows []RestoreRow
	for _, n := range nodes.Items {
		if node != "" && n.Name != node {
			continue
		}
		r := RestoreRow{Node: n.Name, BootID: n.Status.NodeInfo.BootID, RestoredBoot: n.Annotations[v1.AnnotationRestoredBootID],
			Restored: v1.LocksRestoredProblem(&n) == ""}
		r.Tainted = v1.StartupTaint(&n) != nil
		for _, c := range n.Status.Conditions {
			if string(c.Type) == v1.NodeConditionLocksRestored {
				r.Condition, r.Message = c.Reason, c.Message
				r.LastChangeAgo = time.Since(c.LastTransitionTime.Time).Round(time.Second).String()
			}
		}
		if problem := v1.LocksRestoredProblem(&n); problem != "" {
			r.Message = problem // what blocks new attachments now, not the last condition
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })
	return rows, nil
}
