package status

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The go_* and process_* families are the ones Prometheus' Go client exports by default, with
// the same names, kinds and meanings, so that dashboards and alerts written for any Go program
// work on the gateway.

// runtimeSamples are the runtime/metrics the go_memstats_* families are made of.
var runtimeSamples = []string{
	"/gc/heap/allocs:bytes",
	"/gc/heap/allocs:objects",
	"/gc/heap/frees:objects",
	"/gc/heap/goal:bytes",
	"/gc/heap/objects:objects",
	"/gc/heap/tiny/allocs:objects",
	"/gc/gogc:percent",
	"/gc/gomemlimit:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/metadata/mcache/free:bytes",
	"/memory/classes/metadata/mcache/inuse:bytes",
	"/memory/classes/metadata/mspan/free:bytes",
	"/memory/classes/metadata/mspan/inuse:bytes",
	"/memory/classes/metadata/other:bytes",
	"/memory/classes/os-stacks:bytes",
	"/memory/classes/other:bytes",
	"/memory/classes/profiling/buckets:bytes",
	"/memory/classes/total:bytes",
	"/sched/gomaxprocs:threads",
}

// addGoFamilies adds the Go runtime's families: goroutines, threads, GC pauses, memory.
func addGoFamilies(e *exposition) {
	read := make([]metrics.Sample, len(runtimeSamples))
	for i, name := range runtimeSamples {
		read[i].Name = name
	}
	metrics.Read(read)
	v := make(map[string]float64, len(read))
	for _, s := range read {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			v[s.Name] = float64(s.Value.Uint64())
		case metrics.KindFloat64:
			v[s.Name] = s.Value.Float64()
		}
	}
	gc := debug.GCStats{PauseQuantiles: make([]time.Duration, 5)}
	debug.ReadGCStats(&gc)
	threads, _ := runtime.ThreadCreateProfile(nil)

	pauses := e.family("go_gc_duration_seconds", "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.", summary)
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		pauses.add(gc.PauseQuantiles[i].Seconds(), "quantile", q)
	}
	pauses.addSuffixed("_sum", gc.PauseTotal.Seconds())
	pauses.addSuffixed("_count", float64(gc.NumGC))
	e.family("go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.", gauge).
		add(v["/gc/gogc:percent"])
	e.family("go_gc_gomemlimit_bytes", "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes.", gauge).
		add(v["/gc/gomemlimit:bytes"])
	e.family("go_goroutines", "Number of goroutines that currently exist.", gauge).add(float64(runtime.NumGoroutine()))
	e.family("go_info", "Information about the Go environment.", gauge).add(1, "version", runtime.Version())
	e.family("go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads.", gauge).
		add(v["/sched/gomaxprocs:threads"])
	e.family("go_threads", "Number of OS threads created.", gauge).add(float64(threads))

	heapObjects := v["/memory/classes/heap/objects:bytes"]
	memstats := []struct {
		name, help, kind string
		value            float64
	}{
		{"alloc_bytes", "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.", gauge, heapObjects},
		{"alloc_bytes_total", "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.", counter, v["/gc/heap/allocs:bytes"]},
		{"buck_hash_sys_bytes", "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.", gauge, v["/memory/classes/profiling/buckets:bytes"]},
		{"frees_total", "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.", counter, v["/gc/heap/frees:objects"] + v["/gc/heap/tiny/allocs:objects"]},
		{"gc_sys_bytes", "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.", gauge, v["/memory/classes/metadata/other:bytes"]},
		{"heap_alloc_bytes", "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", gauge, heapObjects},
		{"heap_idle_bytes", "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", gauge, v["/memory/classes/heap/released:bytes"] + v["/memory/classes/heap/free:bytes"]},
		{"heap_inuse_bytes", "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", gauge, heapObjects + v["/memory/classes/heap/unused:bytes"]},
		{"heap_objects", "Number of currently allocated objects. Equals to /gc/heap/objects:objects.", gauge, v["/gc/heap/objects:objects"]},
		{"heap_released_bytes", "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.", gauge, v["/memory/classes/heap/released:bytes"]},
		{"heap_sys_bytes", "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", gauge,
			heapObjects + v["/memory/classes/heap/unused:bytes"] + v["/memory/classes/heap/released:bytes"] + v["/memory/classes/heap/free:bytes"]},
		{"last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.", gauge, unixSeconds(gc.LastGC)},
		{"mallocs_total", "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.", counter,
			v["/gc/heap/allocs:objects"] + v["/gc/heap/tiny/allocs:objects"]},
		{"mcache_inuse_bytes", "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.", gauge, v["/memory/classes/metadata/mcache/inuse:bytes"]},
		{"mcache_sys_bytes", "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.", gauge,
			v["/memory/classes/metadata/mcache/inuse:bytes"] + v["/memory/classes/metadata/mcache/free:bytes"]},
		{"mspan_inuse_bytes", "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.", gauge, v["/memory/classes/metadata/mspan/inuse:bytes"]},
		{"mspan_sys_bytes", "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.", gauge,
			v["/memory/classes/metadata/mspan/inuse:bytes"] + v["/memory/classes/metadata/mspan/free:bytes"]},
		{"next_gc_bytes", "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.", gauge, v["/gc/heap/goal:bytes"]},
		{"other_sys_bytes", "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.", gauge, v["/memory/classes/other:bytes"]},
		{"stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.", gauge, v["/memory/classes/heap/stacks:bytes"]},
		{"stack_sys_bytes", "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.", gauge,
			v["/memory/classes/heap/stacks:bytes"] + v["/memory/classes/os-stacks:bytes"]},
		{"sys_bytes", "Number of bytes obtained from system. Equals to /memory/classes/total:byte.", gauge, v["/memory/classes/total:bytes"]},
	}
	for _, m := range memstats {
		e.family("go_memstats_"+m.name, m.help, m.kind).add(m.value)
	}
}

// unixSeconds is t in seconds since 1970, 0 for the zero time (no GC yet).
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// userHZ is the unit of the CPU times in /proc/self/stat: 100 on every Linux the gateway runs on.
const userHZ = 100

// addProcessFamilies adds the process's families from /proc: CPU time, memory, descriptors,
// start time and the network namespace's traffic. A family whose source cannot be read (not
// Linux, /proc not mounted) is left out; the others are still given.
func addProcessFamilies(e *exposition) {
	if stat, err := readProcStat(); err == nil {
		e.family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", counter).add(stat.cpuSeconds)
		e.family("process_resident_memory_bytes", "Resident memory size in bytes.", gauge).add(stat.residentBytes)
		e.family("process_virtual_memory_bytes", "Virtual memory size in bytes.", gauge).add(stat.virtualBytes)
		if boot, err := bootTime(); err == nil {
			e.family("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", gauge).add(boot + stat.startTicks/userHZ)
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		e.family("process_open_fds", "Number of open file descriptors.", gauge).add(float64(len(fds)))
	}
	var limit syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit) == nil {
		e.family("process_max_fds", "Maximum number of open file descriptors.", gauge).add(float64(limit.Cur))
	}
	if syscall.Getrlimit(syscall.RLIMIT_AS, &limit) == nil {
		e.family("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.", gauge).add(float64(limit.Cur))
	}
	if received, sent, err := networkBytes(); err == nil {
		e.family("process_network_receive_bytes_total", "Number of bytes received by the process over the network.", counter).add(received)
		e.family("process_network_transmit_bytes_total", "Number of bytes sent by the process over the network.", counter).add(sent)
	}
}

// procStat is what the process families take from /proc/self/stat.
type procStat struct {
	cpuSeconds, residentBytes, virtualBytes, startTicks float64
}

func readProcStat() (procStat, error) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces: fields are counted
	// from after its closing parenthesis, where field 3 (the state) begins.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return procStat{}, strconv.ErrSyntax
	}
	fields := strings.Fields(string(data[end+1:]))
	field := func(n int) (float64, error) { // n counts from 1, as proc(5) does
		if n-3 >= len(fields) {
			return 0, strconv.ErrSyntax
		}
		return strconv.ParseFloat(fields[n-3], 64)
	}
	var s procStat
	var values [5]float64
	for i, n := range []int{14, 15, 22, 23, 24} { // utime, stime, starttime, vsize, rss (pages)
		if values[i], err = field(n); err != nil {
			return procStat{}, err
		}
	}
	s.cpuSeconds = (values[0] + values[1]) / userHZ
	s.startTicks = values[2]
	s.virtualBytes = values[3]
	s.residentBytes = values[4] * float64(os.Getpagesize())
	return s, nil
}

// bootTime is when the machine booted, in seconds since 1970 (btime in /proc/stat).
func bootTime() (float64, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, strconv.ErrSyntax
}

// networkBytes sums the bytes received and sent by every interface of the process's network
// namespace (/proc/self/net/dev), as Prometheus' Go client does.
func networkBytes() (received, sent float64, err error) {
	data, err := os.ReadFile("/proc/self/net/dev")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(data)) {
		_, counts, ok := strings.Cut(line, ":")
		if !ok {
			continue // the two header lines
		}
		fields := strings.Fields(counts)
		if len(fields) < 9 {
			continue
		}
		rx, err1 := strconv.ParseFloat(fields[0], 64)
		tx, err2 := strconv.ParseFloat(fields[8], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		received += rx
		sent += tx
	}
	return received, sent, nil
}
