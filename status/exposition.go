package status

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// contentType is Prometheus' text exposition format, version 0.0.4, which every Prometheus
// and every agent that scrapes Prometheus reads.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric kinds, as the TYPE line names them.
const (
	counter   = "counter"
	gauge     = "gauge"
	histogram = "histogram"
	summary   = "summary"
)

// exposition is one scrape: metric families, each with its samples, written in the text format.
type exposition struct {
	families []*family
}

// family is one metric family: a name, its help and kind, and its samples in the order added.
type family struct {
	name, help, kind string
	samples          []sample
}

// sample is one line: the family's name with a suffix (_bucket, _sum, _count or none), its
// labels already written out, and a value.
type sample struct {
	suffix, labels string
	value          float64
}

// family starts a family. Families are written sorted by name, whatever the order they were
// started in; a family's samples keep theirs. Label names go in alphabetical order, as
// Prometheus' Go client writes them (a histogram's le last).
func (e *exposition) family(name, help, kind string) *family {
	f := &family{name: name, help: help, kind: kind}
	e.families = append(e.families, f)
	return f
}

// add adds a sample with the given label names and values, in pairs.
func (f *family) add(value float64, labelPairs ...string) {
	f.addSuffixed("", value, labelPairs...)
}

// addSuffixed adds a sample whose name is the family's with suffix.
func (f *family) addSuffixed(suffix string, value float64, labelPairs ...string) {
	f.samples = append(f.samples, sample{suffix: suffix, labels: renderLabels(labelPairs), value: value})
}

// renderLabels writes {name="value",...}, with values escaped as the format asks; nothing for
// no label.
func renderLabels(pairs []string) string {
	if len(pairs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pairs[i])
		b.WriteString(`="`)
		labelEscaper.WriteString(&b, pairs[i+1])
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// bytes returns the scrape in the text format.
func (e *exposition) bytes() []byte {
	slices.SortStableFunc(e.families, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	var buf bytes.Buffer
	for _, f := range e.families {
		if len(f.samples) == 0 {
			continue // as Prometheus' Go client does: a family with no series is not named
		}
		buf.WriteString("# HELP ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		helpEscaper.WriteString(&buf, f.help)
		buf.WriteString("\n# TYPE ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		buf.WriteString(f.kind)
		buf.WriteByte('\n')
		for _, s := range f.samples {
			buf.WriteString(f.name)
			buf.WriteString(s.suffix)
			buf.WriteString(s.labels)
			buf.WriteByte(' ')
			buf.Write(appendValue(buf.AvailableBuffer(), s.value))
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}

// appendValue writes v as the format spells numbers.
func appendValue(dst []byte, v float64) []byte {
	switch {
	case math.IsInf(v, +1):
		return append(dst, "+Inf"...)
	case math.IsInf(v, -1):
		return append(dst, "-Inf"...)
	case math.IsNaN(v):
		return append(dst, "NaN"...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

// latencyHistogram counts observations in buckets with the given upper bounds, safe for
// concurrent use without a lock: each observation is two atomic adds and a compare-and-swap of
// the sum.
type latencyHistogram struct {
	bounds  []float64       // upper bounds, ascending; shared, never written
	counts  []atomic.Uint64 // per bucket, not cumulative; the last is above every bound
	sumBits atomic.Uint64   // float64 bits of the sum of observations
}

func newLatencyHistogram(bounds []float64) *latencyHistogram {
	return &latencyHistogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// observe records v.
func (h *latencyHistogram) observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v) // the first bound ≥ v: buckets are "less or equal"
	h.counts[i].Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// addTo adds the histogram's samples to f, labelled with labelPairs: cumulative buckets, then
// the sum, then the count (the +Inf bucket's).
func (h *latencyHistogram) addTo(f *family, labelPairs ...string) {
	var cumulative uint64
	for i := range h.counts {
		cumulative += h.counts[i].Load()
		le := "+Inf"
		if i < len(h.bounds) {
			le = strconv.FormatFloat(h.bounds[i], 'g', -1, 64)
		}
		f.addSuffixed("_bucket", float64(cumulative), append(slices.Clip(labelPairs), "le", le)...)
	}
	f.addSuffixed("_sum", math.Float64frombits(h.sumBits.Load()), labelPairs...)
	f.addSuffixed("_count", float64(cumulative), labelPairs...)
}
