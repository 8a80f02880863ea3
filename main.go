// Command sharedlvm is the one binary of sharedlvm-operator. Its first argument picks the
// role: `operator` (central, leader-elected), `agent` (one per node) or `version`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sharedlvm/sharedlvm-operator/agent"
	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/memlimit"
	"github.com/sharedlvm/sharedlvm-operator/plugin"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// Version is stamped at build time with -ldflags "-X main.Version=...".
var Version = "dev"

const usage = `usage: sharedlvm ROLE [flags]

roles:
  operator   run the central operator (leader-elected)
  agent      run the node agent (NODE_NAME must be set)
  wait-locks block until this node's agent restored its locks for the current boot
             (init container of nova-compute or any VM launcher)
  kill-vg VG take VG's LVs offline on this host after it lost the VG's lease storage
             (lvm.conf: global/lvmlockctl_kill_command = "/path/to/sharedlvm kill-vg";
             run by lvmlockctl --kill from sanlock, on the host, not in a container)
  leave-lockspaces
             planned shutdown of an evacuated node: leave every lockspace in which this
             host holds no LV lock (keep the others), so that the next boot joins without
             waiting for the old lease to expire; run by the host's shutdown after its VMs
             stopped (README "Planned reboot"), on the host
  version    print the version
  kubectl-sharedlvm COMMAND
             the kubectl plugin (also run when the binary is named kubectl-sharedlvm:
             copy or link it onto PATH, then: kubectl sharedlvm locks)
`

func main() {
	if filepath.Base(os.Args[0]) == "kubectl-sharedlvm" {
		exitOn("kubectl sharedlvm", runPlugin(os.Args[1:]))
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	role, args := os.Args[1], os.Args[2:]
	var err error
	switch role {
	case "operator":
		err = runOperator(args)
	case "agent":
		err = runAgent(args)
	case "wait-locks":
		err = runWaitLocks(args)
	case "kubectl-sharedlvm", "plugin":
		err = runPlugin(args)
	case "kill-vg":
		err = runKillVG(args)
	case "leave-lockspaces":
		err = runLeaveLockspaces(args)
	case "version":
		fmt.Println(Version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n%s", role, usage)
		os.Exit(2)
	}
	exitOn("sharedlvm "+role, err)
}

func exitOn(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
}

// runKillVG is lvm.conf's lvmlockctl_kill_command. It runs on the host, from sanlock's
// kill path, with no API access: it only takes the LVs offline, and lvmlockctl then drops
// the VG's locks; the agent sees the dropped lockspace and reports it.
func runKillVG(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: sharedlvm kill-vg VG")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names, err := lvm.New(executor.Local{}).KillVG(ctx, args[0])
	for _, n := range names {
		fmt.Printf("sharedlvm kill-vg: %s taken offline (error target)\n", n)
	}
	return err
}

// runLeaveLockspaces is a planned shutdown's step on the host: it leaves the lockspaces
// this host holds no LV lock in, and says which it kept and why. Never run by the agent: a
// restarted agent pod keeps every lockspace.
func runLeaveLockspaces(args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("usage: sharedlvm leave-lockspaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	left, kept, err := lvm.New(executor.Local{}).LeaveIdleLockspaces(ctx)
	for _, vg := range left {
		fmt.Printf("sharedlvm leave-lockspaces: left the lockspace of VG %s\n", vg)
	}
	for _, k := range kept {
		fmt.Printf("sharedlvm leave-lockspaces: kept the lockspace of VG %s: %s\n", k.VG, k.Why)
	}
	return err
}

// runPlugin runs `kubectl sharedlvm ...` with kubectl's kubeconfig rules (--kubeconfig,
// then $KUBECONFIG, then ~/.kube/config, then in-cluster).
func runPlugin(args []string) error {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--kubeconfig="); ok {
			os.Setenv("KUBECONFIG", v)
		} else if a == "--kubeconfig" && i+1 < len(args) {
			os.Setenv("KUBECONFIG", args[i+1])
		}
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Print(plugin.Usage)
		return nil
	}
	c, err := newClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return plugin.Run(ctx, c, args, os.Stdout)
}

// parse parses role flags on flag.CommandLine, which also carries controller-runtime's
// --kubeconfig flag, and sets up structured (zap/logr) logging.
func parse(args []string) {
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	_ = flag.CommandLine.Parse(args)
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
}

func runOperator(args []string) error {
	var o roles.OperatorOptions
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint (0 disables it)")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&o.LeaderElection, "leader-elect", true, "elect one active operator among replicas")
	flag.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", roles.DefaultNamespace(), "namespace of the leader election lease")
	qps := flag.Float64("kube-api-qps", roles.DefaultOperatorQPS, "requests per second to the apiserver (client-side limit)")
	flag.IntVar(&o.Burst, "kube-api-burst", roles.DefaultOperatorBurst, "request burst to the apiserver")
	flag.StringVar(&o.HeartbeatNamespace, "heartbeat-namespace", heartbeat.DefaultNamespace, "namespace of the agents' heartbeat Leases (the agents' --heartbeat-namespace)")
	flag.StringVar(&o.PprofAddr, "pprof-bind-address", "", "address of Go's /debug/pprof endpoints, for profiling (empty: off; keep it on loopback)")
	parse(args)
	mem := memlimit.Apply() // before the caches fill
	o.QPS = float32(*qps)
	ctx := ctrl.SetupSignalHandler()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	mgr, err := roles.NewOperator(ctx, cfg, o)
	if err != nil {
		return err
	}
	ctrl.Log.WithName("operator").Info("starting", "version", Version, "memory", mem)
	return mgr.Start(ctx)
}

func runAgent(args []string) error {
	o := roles.AgentOptions{}
	hostNS := flag.Bool("host-namespaces", executor.HostRoot(), "run LVM/sanlock commands in the host's namespaces via nsenter (default: when in a container)")
	flag.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8082", "address of the Prometheus metrics endpoint (0 disables it)")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8083", "address of /healthz and /readyz")
	flag.DurationVar(&o.ReportInterval, "report-interval", agent.DefaultReportInterval, "how often lockspace and VG state are reported")
	flag.StringVar(&o.HeartbeatNamespace, "heartbeat-namespace", heartbeat.DefaultNamespace, "namespace of this agent's heartbeat Lease (the operator's --heartbeat-namespace)")
	parse(args)
	o.Executor = executor.Local{HostNamespaces: *hostNS}
	mem := memlimit.Apply() // before the caches fill
	ctx := ctrl.SetupSignalHandler()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	mgr, err := roles.NewAgent(ctx, cfg, o)
	if err != nil {
		return err
	}
	ctrl.Log.WithName("agent").Info("starting", "version", Version, "node", o.NodeName, "memory", mem)
	return mgr.Start(ctx)
}

func runWaitLocks(args []string) error {
	node := flag.String("node", os.Getenv("NODE_NAME"), "node to wait for (default $NODE_NAME)")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long (exit 1)")
	bootIDFile := flag.String("boot-id-file", roles.BootIDFile, "where the current boot ID is read")
	parse(args)
	if *node == "" {
		return fmt.Errorf("no node: set NODE_NAME (downward API spec.nodeName) or --node")
	}
	bootID, err := roles.ReadBootID(*bootIDFile)
	if err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		return err
	}
	return roles.WaitLocks(ctrl.SetupSignalHandler(), c, *node, bootID, *timeout, 2*time.Second, os.Stdout)
}

// newClient is a client of the cluster kubectl would talk to (--kubeconfig, $KUBECONFIG,
// ~/.kube/config, in-cluster).
func newClient() (client.Client, error) {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: roles.Scheme()})
}
