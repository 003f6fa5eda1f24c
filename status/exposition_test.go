package status

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The text format: families sorted by name and written once each, an empty family left out,
// label values and help escaped, numbers as Prometheus spells them.
func TestExpositionText(t *testing.T) {
	var e exposition
	e.family("b_total", "Help with a \\ and a\nnew line.", counter).add(3, "path", `C:\dir "x"`+"\nend")
	e.family("empty", "No series.", gauge)
	values := e.family("a_values", "Values.", gauge)
	for _, v := range []float64{math.Inf(+1), math.Inf(-1), math.NaN(), 1e21, 0.5, 12345678} {
		values.add(v)
	}
	want := `# HELP a_values Values.
# TYPE a_values gauge
a_values +Inf
a_values -Inf
a_values NaN
a_values 1e+21
a_values 0.5
a_values 1.2345678e+07
# HELP b_total Help with a \\ and a\nnew line.
# TYPE b_total counter
b_total{path="C:\\dir \"x\"\nend"} 3
`
	if got := string(e.bytes()); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}
}

// A histogram's buckets are cumulative and "less or equal": an observation equal to a bound
// counts in that bound's bucket. The count is the +Inf bucket's.
func TestLatencyHistogram(t *testing.T) {
	h := newLatencyHistogram([]float64{0.1, 1})
	for _, v := range []float64{0.05, 0.1, 0.5, 1, 3} {
		h.observe(v)
	}
	var e exposition
	h.addTo(e.family("d_seconds", "Latency.", histogram), "endpoint", "127.0.0.1:2379")
	want := `# HELP d_seconds Latency.
# TYPE d_seconds histogram
d_seconds_bucket{endpoint="127.0.0.1:2379",le="0.1"} 2
d_seconds_bucket{endpoint="127.0.0.1:2379",le="1"} 4
d_seconds_bucket{endpoint="127.0.0.1:2379",le="+Inf"} 5
d_seconds_sum{endpoint="127.0.0.1:2379"} 4.65
d_seconds_count{endpoint="127.0.0.1:2379"} 5
`
	if got := string(e.bytes()); got != want {
		t.Errorf("histogram:\n%s\nwant:\n%s", got, want)
	}
}

// Every go_* and process_* family that Prometheus' Go client exports by default is there, with
// its kind, so that dashboards written for any Go program work on the gateway.
func TestRuntimeFamilies(t *testing.T) {
	var e exposition
	addGoFamilies(&e)
	addProcessFamilies(&e)
	text := string(e.bytes())
	for name, kind := range map[string]string{
		"go_gc_duration_seconds": summary, "go_gc_gogc_percent": gauge, "go_gc_gomemlimit_bytes": gauge,
		"go_goroutines": gauge, "go_info": gauge, "go_sched_gomaxprocs_threads": gauge, "go_threads": gauge,
		"go_memstats_alloc_bytes": gauge, "go_memstats_alloc_bytes_total": counter, "go_memstats_buck_hash_sys_bytes": gauge,
		"go_memstats_frees_total": counter, "go_memstats_gc_sys_bytes": gauge, "go_memstats_heap_alloc_bytes": gauge,
		"go_memstats_heap_idle_bytes": gauge, "go_memstats_heap_inuse_bytes": gauge, "go_memstats_heap_objects": gauge,
		"go_memstats_heap_released_bytes": gauge, "go_memstats_heap_sys_bytes": gauge, "go_memstats_last_gc_time_seconds": gauge,
		"go_memstats_mallocs_total": counter, "go_memstats_mcache_inuse_bytes": gauge, "go_memstats_mcache_sys_bytes": gauge,
		"go_memstats_mspan_inuse_bytes": gauge, "go_memstats_mspan_sys_bytes": gauge, "go_memstats_next_gc_bytes": gauge,
		"go_memstats_other_sys_bytes": gauge, "go_memstats_stack_inuse_bytes": gauge, "go_memstats_stack_sys_bytes": gauge,
		"go_memstats_sys_bytes":     gauge,
		"process_cpu_seconds_total": counter, "process_max_fds": gauge, "process_open_fds": gauge,
		"process_resident_memory_bytes": gauge, "process_start_time_seconds": gauge, "process_virtual_memory_bytes": gauge,
		"process_virtual_memory_max_bytes": gauge, "process_network_receive_bytes_total": counter,
		"process_network_transmit_bytes_total": counter,
	} {
		if !strings.Contains(text, "\n# TYPE "+name+" "+kind+"\n") {
			t.Errorf("no %s family of kind %s", name, kind)
		}
	}
	for _, nonZero := range []string{"\ngo_goroutines ", "\ngo_memstats_sys_bytes ", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds ", "\nprocess_start_time_seconds "} {
		i := strings.Index(text, nonZero)
		if i < 0 {
			t.Errorf("no%s sample", nonZero)
			continue
		}
		if rest := text[i+len(nonZero):]; strings.HasPrefix(rest, "0\n") {
			t.Errorf("%s is 0", strings.TrimSpace(nonZero))
		}
	}
	if i := strings.Index(text, "\nprocess_start_time_seconds "); i >= 0 {
		line, _, _ := strings.Cut(text[i+len("\nprocess_start_time_seconds "):], "\n")
		started, err := strconv.ParseFloat(line, 64)
		if age := time.Since(time.Unix(int64(started), 0)); err != nil || age < -time.Second || age > time.Hour {
			t.Errorf("process_start_time_seconds %s is not when this test started (%v)", line, err)
		}
	}
}
