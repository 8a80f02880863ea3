// Package nodes is the nodes tier: the Helm chart on real kubelets in the bed's VMs. This file
// is its control plane on this machine: etcd, kube-apiserver (the envtest binaries),
// kube-controller-manager and kube-scheduler (hack/node-binaries.sh), with certificates of its
// own so that pods reach the apiserver at the kubernetes Service's IP, which the bed forwards
// to this machine's loopback (no kube-proxy needed for the one Service the pods use).
package nodes

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// ServiceCIDR is the Service range; its first address is the kubernetes Service's.
	ServiceCIDR = "10.0.2.128/28"
	// ServiceIP is the kubernetes Service's ClusterIP, inside the bed's guest network: the bed
	// forwards ServiceIP:443 to the apiserver.
	ServiceIP = "10.0.2.129"
)

// Cluster is a running control plane.
type Cluster struct {
	Dir  string
	Port int
	// Admin is a system:masters kubeconfig for this machine's loopback.
	Admin  string
	Config *rest.Config
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	procs  []*exec.Cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// issue signs a certificate for cn/orgs (client) or for the names (server) and writes
// NAME.crt and NAME.key into the cluster's directory.
func (c *Cluster) issue(name, cn string, orgs []string, server bool, names ...string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(c.Dir, name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(filepath.Join(c.Dir, name+".key"), "EC PRIVATE KEY", kb)
}

// Kubeconfig writes a kubeconfig for a client certificate NAME (issued for cn/orgs) that
// reaches the apiserver at server.
func (c *Cluster) Kubeconfig(name, cn string, orgs []string, server string) (string, error) {
	if err := c.issue(name, cn, orgs, false); err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bed"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: filepath.Join(c.Dir, "ca.crt")}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificate: filepath.Join(c.Dir, name+".crt"), ClientKey: filepath.Join(c.Dir, name+".key")}
	cfg.Contexts["bed"] = &clientcmdapi.Context{Cluster: "bed", AuthInfo: name}
	cfg.CurrentContext = "bed"
	path := filepath.Join(c.Dir, name+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// CA is the cluster CA's certificate file.
func (c *Cluster) CA() string { return filepath.Join(c.Dir, "ca.crt") }

// Start brings the control plane up in dir: envtest is the directory of etcd and
// kube-apiserver (hack/envtest-binaries.sh), bins that of kube-controller-manager and
// kube-scheduler (hack/node-binaries.sh).
func Start(ctx context.Context, dir, envtest, bins string) (*Cluster, error) {
	c := &Cluster{Dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if c.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	caT := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sharedlvm-bed-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, caT, caT, &c.caKey.PublicKey, c.caKey)
	if err != nil {
		return nil, err
	}
	if c.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	kb, _ := x509.MarshalECPrivateKey(c.caKey)
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, "ca.key"), "EC PRIVATE KEY", kb); err != nil {
		return nil, err
	}
	if err := c.issue("apiserver", "kube-apiserver", nil, true, "127.0.0.1", ServiceIP, "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"); err != nil {
		return nil, err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa)); err != nil {
		return nil, err
	}
	pub, _ := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub); err != nil {
		return nil, err
	}
	etcdPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	if c.Port, err = freePort(); err != nil {
		return nil, err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", c.Port)
	if c.Admin, err = c.Kubeconfig("admin", "bed-admin", []string{"system:masters"}, server); err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	if err := c.start("etcd", filepath.Join(envtest, "etcd"), "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort), "--unsafe-no-fsync"); err != nil {
		return nil, err
	}
	p := func(f string) string { return filepath.Join(dir, f) }
	if err := c.start("kube-apiserver", filepath.Join(envtest, "kube-apiserver"),
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(c.Port),
		"--advertise-address", "10.0.2.100", "--service-cluster-ip-range", ServiceCIDR,
		"--tls-cert-file", p("apiserver.crt"), "--tls-private-key-file", p("apiserver.key"),
		"--client-ca-file", p("ca.crt"), "--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", p("sa.pub"), "--service-account-signing-key-file", p("sa.key"),
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged",
		"--kubelet-preferred-address-types", "InternalIP"); err != nil {
		c.Stop()
		return nil, err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Admin); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.waitHealthy(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.start("kube-controller-manager", filepath.Join(bins, "kube-controller-manager"),
		"--kubeconfig", c.Admin, "--authentication-kubeconfig", c.Admin, "--authorization-kubeconfig", c.Admin,
		"--service-account-private-key-file", p("sa.key"), "--root-ca-file", p("ca.crt"),
		"--use-service-account-credentials", "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "0",
		"--node-monitor-grace-period", "20s"); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.start("kube-scheduler", filepath.Join(bins, "kube-scheduler"),
		"--kubeconfig", c.Admin, "--authentication-kubeconfig", c.Admin, "--authorization-kubeconfig", c.Admin,
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "0"); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(name, bin string, args ...string) error {
	log, err := os.Create(filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); log.Close() }()
	c.procs = append(c.procs, cmd)
	return nil
}

func (c *Cluster) waitHealthy(ctx context.Context) error {
	rc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Config.Host+"/readyz", nil)
		resp, err := rc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(b))
		} else {
			last = err.Error()
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after 2 min: %s (log: %s)", last, filepath.Join(c.Dir, "kube-apiserver.log"))
}

// Stop kills every process, newest first.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		_ = c.procs[i].Process.Kill()
	}
}
