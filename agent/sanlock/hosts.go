package sanlock

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// HostState is sanlock's view of another host in a lockspace, from its delta lease.
type HostState string

const (
	// HostLive: the host renews its delta lease.
	HostLive HostState = "LIVE"
	// HostFail: renewals stopped; the host may still hold leases (its watchdog has not fired
	// yet). Never treat its locks as released.
	HostFail HostState = "FAIL"
	// HostDead: the host's lease expired long enough ago that its watchdog must have reset
	// it; sanlock now grants its leases to others.
	HostDead HostState = "DEAD"
	// HostFree: the host_id slot is unused.
	HostFree HostState = "FREE"
	// HostUnknown: not enough observations yet.
	HostUnknown HostState = "UNKNOWN"
)

// Host is one `h` line of `sanlock client gets -h 1`.
type Host struct {
	ID         int
	Generation int64
	Timestamp  int64
	State      HostState
}

// LockspaceHosts is a lockspace with the hosts sanlock sees in it.
type LockspaceHosts struct {
	Lockspace Lockspace
	Hosts     []Host
}

// ParseGets parses `sanlock client gets -h 1`.
func ParseGets(out []byte) ([]LockspaceHosts, error) {
	var res []LockspaceHosts
	sc := bufio.NewScanner(bytes.NewReader(out))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		kind, rest, _ := strings.Cut(line, " ")
		switch kind {
		case "s":
			ls, err := parseLockspace(rest)
			if err != nil {
				return nil, fmt.Errorf("sanlock gets line %d %q: %w", n, line, err)
			}
			res = append(res, LockspaceHosts{Lockspace: ls})
		case "h":
			f := strings.Fields(rest)
			if len(f) < 6 || f[1] != "gen" || f[3] != "timestamp" || len(res) == 0 {
				return nil, fmt.Errorf("sanlock gets line %d %q: want 'h ID gen G timestamp T STATE'", n, line)
			}
			var h Host
			var err error
			if h.ID, err = strconv.Atoi(f[0]); err == nil {
				if h.Generation, err = strconv.ParseInt(f[2], 10, 64); err == nil {
					h.Timestamp, err = strconv.ParseInt(f[4], 10, 64)
				}
			}
			if err != nil {
				return nil, fmt.Errorf("sanlock gets line %d %q: %w", n, line, err)
			}
			h.State = HostState(f[5])
			res[len(res)-1].Hosts = append(res[len(res)-1].Hosts, h)
		}
	}
	return res, sc.Err()
}

// Client runs sanlock client commands through an executor.
type Client struct {
	Exec executor.Executor
}

func (c *Client) run(ctx context.Context, argv ...string) ([]byte, error) {
	res, err := c.Exec.Run(ctx, argv)
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 {
		return nil, fmt.Errorf("%s: exit %d: %s", strings.Join(argv, " "), res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	return res.Stdout, nil
}

// Status runs and parses `sanlock client status`: lockspaces joined and leases held here.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	out, err := c.run(ctx, "sanlock", "client", "status")
	if err != nil {
		return nil, err
	}
	return ParseStatus(out)
}

// Hosts runs `sanlock client gets -h 1`: every lockspace with the state of each host in it,
// for host-death decisions (a lease of a FAIL host is still held; only DEAD is released).
func (c *Client) Hosts(ctx context.Context) ([]LockspaceHosts, error) {
	out, err := c.run(ctx, "sanlock", "client", "gets", "-h", "1")
	if err != nil {
		return nil, err
	}
	return ParseGets(out)
}

// RemoveOrphanLockspace leaves a lockspace this host joined that no lvmlockd serves any more:
// lvmlockd died and its successor did not adopt it, so no LVM command can lock the VG here,
// and a lockstart while sanlock keeps it returns without lvmlockd serving the VG (measured).
// lvmlockd sets the lockspace's USED_BY_ORPHANS flag, so `rem_lockspace` waits for ever
// while an orphan lease is left, such as the VG lock of a command that died with lvmlockd
// (measured on sanlock 3.8.5: still waiting after 180 s; `release -O 1` of that orphan
// returns -16). The flag is cleared first (`set_config -O 0`): the removal then drops the
// orphans. The caller must have checked that sanlock holds no LV lease in it and that no LV
// of the VG is active on this host: leaving it then gives up nothing that protects data.
func (c *Client) RemoveOrphanLockspace(ctx context.Context, ls Lockspace) error {
	if strings.ContainsAny(ls.Name+ls.Path, ": \n") || !strings.HasPrefix(ls.Name, "lvm_") || !strings.HasPrefix(ls.Path, "/dev/") {
		return fmt.Errorf("sanlock: refusing to remove lockspace %q at %q", ls.Name, ls.Path)
	}
	spec := fmt.Sprintf("%s:%d:%s:%d", ls.Name, ls.HostID, ls.Path, ls.Offset)
	if _, err := c.run(ctx, "sanlock", "client", "set_config", "-s", spec, "-O", "0"); err != nil {
		return err
	}
	_, err := c.run(ctx, "sanlock", "client", "rem_lockspace", "-s", spec)
	return err
}
