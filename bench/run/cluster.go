package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// freePort returns a loopback port for a child process to bind.
func freePort() int {
	port, err := testnet.FreePort()
	if err != nil {
		panic(err)
	}
	return port
}

// process is a child process the benchmark owns.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(bin string, args ...string) (*process, error) {
	p := &process{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) kill() {
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Kill()
	<-p.done
}

func (p *process) signal(s syscall.Signal) { p.cmd.Process.Signal(s) }

// member is one etcd server of the benchmark's cluster.
type member struct {
	name   string
	client string
	args   []string
	proc   *process
}

func (m *member) restart(etcd string) error {
	p, err := start(etcd, m.args...)
	m.proc = p
	return err
}

// cluster is a 3-member etcd cluster on loopback with data on tmpfs.
type cluster struct {
	etcd    string
	dir     string
	members []*member
	tls     *memberCerts // nil: the members serve plain clients
}

// memberCerts are the files of members that serve clients over TLS.
type memberCerts struct {
	ca, cert, key string
}

// scheme is the scheme of the members' client URLs.
func (m *memberCerts) scheme() string {
	if m == nil {
		return "http"
	}
	return "https"
}

func startCluster(etcd string) (*cluster, error) { return startClusterWith(etcd, nil) }

// startClusterWith starts a cluster whose members serve clients over TLS with certs, or plain
// when certs is nil.
func startClusterWith(etcd string, certs *memberCerts) (*cluster, error) {
	base := "/dev/shm"
	if _, err := os.Stat(base); err != nil {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "etcd-gateway-bench")
	if err != nil {
		return nil, err
	}
	c := &cluster{etcd: etcd, dir: dir, tls: certs}
	var peers []string
	peerURLs := map[string]string{}
	for i := range 3 {
		name := fmt.Sprintf("m%d", i)
		peerURLs[name] = fmt.Sprintf("http://127.0.0.1:%d", freePort())
		peers = append(peers, name+"="+peerURLs[name])
		c.members = append(c.members, &member{name: name, client: fmt.Sprintf("127.0.0.1:%d", freePort())})
	}
	for _, m := range c.members {
		m.args = []string{"--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", certs.scheme() + "://" + m.client, "--advertise-client-urls", certs.scheme() + "://" + m.client,
			"--listen-peer-urls", peerURLs[m.name], "--initial-advertise-peer-urls", peerURLs[m.name],
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(dir), "--unsafe-no-fsync", "--log-level", "error"}
		if certs != nil {
			m.args = append(m.args, "--cert-file", certs.cert, "--key-file", certs.key)
		}
		if err := m.restart(etcd); err != nil {
			c.stop()
			return nil, err
		}
	}
	if _, ok := c.waitReady(30 * time.Second); !ok {
		c.stop()
		return nil, fmt.Errorf("cluster in %s not ready", dir)
	}
	return c, nil
}

// waitReady waits until every member answers GET /readyz with 200 and returns when the first did.
func (c *cluster) waitReady(within time.Duration) (first time.Time, ok bool) {
	probe := &http.Client{Timeout: 200 * time.Millisecond}
	if c.tls != nil {
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(c.tls.ca); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		probe.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	deadline := time.Now().Add(within)
	ready := map[string]bool{}
	for time.Now().Before(deadline) {
		for _, m := range c.members {
			if ready[m.name] {
				continue
			}
			resp, err := probe.Get(c.tls.scheme() + "://" + m.client + "/readyz")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if len(ready) == 0 {
					first = time.Now()
				}
				ready[m.name] = true
			}
		}
		if len(ready) == len(c.members) {
			return first, true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return first, false
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client)
	}
	return eps
}

// leader returns the index of the current leader.
func (c *cluster) leader() int {
	cl, err := newClient(c.members[0].client)
	if err != nil {
		return 0
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := cl.Status(ctx, c.members[0].client)
	if err != nil {
		return 0
	}
	for i, m := range c.members {
		if s, err := cl.Status(ctx, m.client); err == nil && s.Header.MemberId == st.Leader {
			return i
		}
	}
	return 0
}

func (c *cluster) stop() {
	for _, m := range c.members {
		if m.proc != nil {
			m.proc.kill()
		}
	}
	os.RemoveAll(c.dir)
}
