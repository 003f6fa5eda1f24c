//go:build profile

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"
)

// With the profile build tag (make profile-idle), ETCD_GATEWAY_PROFILE=dir,duration makes the
// gateway profile its first duration after start: it writes the CPU profile, sampled at 1 kHz
// so that an idle gateway leaves enough samples, and the allocations profile into dir. The
// gateway built without the tag has none of this.
func init() {
	spec, ok := os.LookupEnv("ETCD_GATEWAY_PROFILE")
	if !ok {
		return
	}
	dir, length, _ := strings.Cut(spec, ",")
	d, err := time.ParseDuration(length)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ETCD_GATEWAY_PROFILE=%s: want dir,duration such as /tmp/prof,60s\n", spec)
		os.Exit(2)
	}
	runtime.MemProfileRate = 4096
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	runtime.SetCPUProfileRate(1000) // StartCPUProfile keeps this rate, and says it cannot set its own
	if err := pprof.StartCPUProfile(cpu); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go func() {
		time.Sleep(d) // the profile's length, not a wait for a state
		pprof.StopCPUProfile()
		cpu.Close()
		allocs, err := os.Create(filepath.Join(dir, "allocs.tmp"))
		if err != nil {
			return
		}
		pprof.Lookup("allocs").WriteTo(allocs, 0)
		allocs.Close()
		os.Rename(filepath.Join(dir, "allocs.tmp"), filepath.Join(dir, "allocs.pprof")) // the signal that both are written
	}()
}
