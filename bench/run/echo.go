package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// serveEcho is the echo suite: it echoes every byte on each address through a small buffer per
// connection (no splice, so one descriptor per connection), until killed.
func serveEcho(addrs []string) {
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fail(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					testnet.EchoBuffered(c)
				}()
			}
		}()
	}
	select {}
}

// startEchoes runs three echo servers in a child process of this program and returns their
// addresses.
func startEchoes() ([]string, *process, error) {
	var addrs []string
	for range 3 {
		addrs = append(addrs, "127.0.0.1:"+itoa(freePort()))
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	p := &process{cmd: exec.Command(self, "-suite", "echo", "-listen", strings.Join(addrs, ",")), done: make(chan struct{})}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		return nil, nil, err
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	for _, a := range addrs {
		if err := waitListening(a); err != nil {
			p.kill()
			return nil, nil, err
		}
	}
	return addrs, p, nil
}
