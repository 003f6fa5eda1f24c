package resolver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestParseEndpointsFile(t *testing.T) {
	eps, err := ParseEndpointsFile("# members of the cluster\n\n10.0.0.2:2379   # second\n  http://10.0.0.1:2379\n[::1]:2379\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:2379", "10.0.0.2:2379", "[::1]:2379"}
	var got []string
	for _, ep := range eps {
		got = append(got, ep.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parsed %v, want %v", got, want)
	}
	for text, wantErr := range map[string]string{
		"":                           "no endpoint",
		"# only a comment\n":         "no endpoint",
		"10.0.0.1:2379\nbad:port\n":  "line 2",
		"https://10.0.0.1:2379\n":    "line 1",
		"10.0.0.1:2379,10.0.0.2:1\n": "line 1",
	} {
		if _, err := ParseEndpointsFile(text); err == nil || !strings.Contains(err.Error(), wantErr) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseEndpointsFile(%q) = %v, want one line with %q", text, err, wantErr)
		}
	}
}

func TestReadEndpointsFileRefusesWhatIsNotAnEndpointsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints")
	if err := os.WriteFile(path, []byte(strings.Repeat("127.0.0.1:2379\n", 100_000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEndpointsFile(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("ReadEndpointsFile of 1.5 MB = %v, want it refused", err)
	}
	for _, notAFile := range []string{"/dev/zero", "/dev/stdin", t.TempDir()} {
		if _, err := ReadEndpointsFile(notAFile); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("ReadEndpointsFile(%s) = %v, want it refused as not a regular file", notAFile, err)
		}
	}
}

// fileFixture runs a File service on an endpoints file in a temporary directory.
type fileFixture struct {
	t       *testing.T
	path    string
	updates *Updates
	reload  chan struct{}
	logs    *observer.ObservedLogs
}

func startFile(t *testing.T, initial string) *fileFixture {
	t.Helper()
	f := &fileFixture{t: t, path: filepath.Join(t.TempDir(), "endpoints"), updates: NewUpdates(), reload: make(chan struct{}, 1)}
	f.write(initial)
	guard, err := NewLoopGuard(context.Background(), "127.0.0.1:23790")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	svc := NewFile(f.path, f.updates, f.reload, guard, zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return f
}

// write replaces the file the way configuration tools do: a new file renamed over it.
func (f *fileFixture) write(text string) {
	f.t.Helper()
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		f.t.Fatal(err)
	}
}

// waitSet waits until the published set is want.
func (f *fileFixture) waitSet(want ...string) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		set, _ := f.updates.Latest()
		var got []string
		for _, ep := range set {
			got = append(got, ep.String())
		}
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("published set %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fileFixture) refusals() int {
	return f.logs.FilterMessage("endpoints file refused; keeping the current endpoint set").Len()
}

func TestFileFollowsChangesWithoutSignal(t *testing.T) {
	f := startFile(t, "127.0.0.1:2379\n")
	f.waitSet("127.0.0.1:2379")
	f.write("127.0.0.1:2379\n127.0.0.1:22379\n")
	f.waitSet("127.0.0.1:2379", "127.0.0.1:22379")
	// Appending in place, as an editor without a rename does.
	fh, err := os.OpenFile(f.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString("127.0.0.1:32379\n")
	fh.Close()
	f.waitSet("127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379")
}

func TestFileRefusesBadContentAndKeepsTheSet(t *testing.T) {
	f := startFile(t, "127.0.0.1:2379\n")
	f.waitSet("127.0.0.1:2379")
	for _, bad := range []string{"127.0.0.1:2379\nbad:port:here\n", "# emptied by mistake\n", "127.0.0.1:23790\n"} {
		before := f.refusals()
		f.write(bad)
		deadline := time.Now().Add(5 * time.Second)
		for f.refusals() == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if f.refusals() != before+1 {
			t.Fatalf("file %q: %d refusals logged, want 1", bad, f.refusals()-before)
		}
		f.waitSet("127.0.0.1:2379")
	}
	// SIGHUP with the same bad file logs the refusal again: the operator asked.
	before := f.refusals()
	f.reload <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for f.refusals() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.refusals() != before+1 {
		t.Fatal("a reload of a refused file did not say so")
	}
	f.write("127.0.0.1:12379\n")
	f.waitSet("127.0.0.1:12379")
}

func FuzzParseEndpointsFile(f *testing.F) {
	for _, seed := range []string{"127.0.0.1:2379\n", "# c\n\n[::1]:2379 # x\nhttp://a:1\n", "a\n", "\n\n#", "a:1\r\nb:2\r\n", "a:1,b:2\n"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		eps, err := ParseEndpointsFile(text)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error for %q: %q", text, err)
			}
			return
		}
		if len(eps) == 0 {
			t.Fatalf("no error and no endpoints for %q", text)
		}
		for _, ep := range eps {
			again, err := ParseEndpoint(ep.Addr())
			if err != nil || again != ep {
				t.Fatalf("%+v does not round-trip through Addr %q: %+v, %v", ep, ep.Addr(), again, err)
			}
		}
		if !slices.IsSortedFunc(eps, compare) || len(slices.Compact(slices.Clone(eps))) != len(eps) {
			t.Fatalf("result of %q not sorted and unique: %v", text, eps)
		}
	})
}

// A FIFO is refused at once: opening it does not wait for a writer.
func TestReadEndpointsFileRefusesAFIFOWithoutBlocking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ReadEndpointsFile(path)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("ReadEndpointsFile of a FIFO = %v, want it refused as not a regular file", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the open so the goroutine ends, then fail.
		if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("ReadEndpointsFile blocked on a FIFO")
	}
}

// Another file in the same directory that changes every 20 ms does not hold back a change of
// the endpoints file: it is read within a second of the change.
func TestFileChangeSeenWhileTheDirectoryIsBusy(t *testing.T) {
	f := startFile(t, "127.0.0.1:2379\n")
	f.waitSet("127.0.0.1:2379")
	stop := make(chan struct{})
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		noisy := filepath.Join(filepath.Dir(f.path), "noisy.log")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			os.WriteFile(noisy, []byte(strings.Repeat("x", i%100)), 0o644)
		}
	}()
	defer func() {
		close(stop)
		<-busy
	}()
	changed := time.Now()
	f.write("127.0.0.1:12379\n")
	f.waitSet("127.0.0.1:12379")
	if took := time.Since(changed); took > time.Second {
		t.Fatalf("the change was read %s after it was made, want within 1s", took)
	}
}
