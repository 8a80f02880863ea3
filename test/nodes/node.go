package nodes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Node describes one bed host as a Kubernetes node.
type Node struct {
	Name string
	// Subnet is the node's pod range (the bridge CNI plugin's host-local IPAM).
	Subnet string
	// Kubelet is the kubelet binary (this machine's path; the guest sees the same).
	Kubelet string
	// Images are docker-archives imported at every boot; Sandbox is the pause image's ref.
	Images  []string
	Sandbox string
	// Containerd, when set, is another containerd binary than Debian's (its shim beside it).
	Containerd string
}

// WriteNodeDir writes what the guest's node init reads (internal/testbed/guestd/node.go):
// containerd's and the kubelet's configuration, the pod network and the node's client
// certificate (CN system:node:NAME, for the Node authorizer and NodeRestriction).
func (c *Cluster) WriteNodeDir(dir string, n Node) error {
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		return err
	}
	kc, err := c.Kubeconfig("node-"+n.Name, "system:node:"+n.Name, []string{"system:nodes"}, "https://"+ServiceIP+":443")
	if err != nil {
		return err
	}
	containerd := fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`, n.Sandbox)
	cni := fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "bed", "plugins": [{"type": "bridge", "bridge": "cni0",
  "isGateway": true, "ipMasq": true, "hairpinMode": true,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
`, n.Subnet)
	// cgroupfs: the guest has no systemd. Eviction thresholds low: the guest's disk is tmpfs.
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
resolvConf: ""
readOnlyPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "16Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
nodeStatusUpdateFrequency: 5s
`, c.CA())
	args := []string{n.Kubelet,
		"--config=" + filepath.Join(dir, "kubelet.yaml"),
		"--kubeconfig=" + kc,
		"--hostname-override=" + n.Name,
		"--node-ip=10.0.2.15",
		// The startup taint, as the README tells users to register their nodes.
		"--register-with-taints=sharedlvm.io/locks-not-restored=:NoSchedule",
		"--v=2",
	}
	for name, body := range map[string]string{
		"containerd.toml": containerd, "cni.conflist": cni, "kubelet.yaml": kubelet,
		"kubelet.args": strings.Join(args, "\n") + "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	_ = os.Remove(filepath.Join(dir, "containerd.bin"))
	if n.Containerd != "" {
		if err := os.WriteFile(filepath.Join(dir, "containerd.bin"), []byte(n.Containerd+"\n"), 0o644); err != nil {
			return err
		}
	}
	for _, img := range n.Images {
		link := filepath.Join(dir, "images", filepath.Base(img))
		_ = os.Remove(link)
		if err := os.Symlink(img, link); err != nil {
			return err
		}
	}
	return nil
}
