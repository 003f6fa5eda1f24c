package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// serveEcho is the echo suite: it echoes every byte on each address with a small buffer per
// connection (no splice, so it holds one descriptor per connection), until killed.
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
				go echoConn(c)
			}
		}()
	}
	select {}
}

func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
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
