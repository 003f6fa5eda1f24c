package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
)

// fileSettle is how long the directory of the endpoints file must stay unchanged before the
// file is read: editors and configuration tools write a file in several steps. Events are not
// filtered by name (Kubernetes updates a ConfigMap by swapping a "..data" symlink), so other
// files may keep the directory busy: the file is read at most fileSettleMax after the first
// event whatever happens meanwhile.
const (
	fileSettle    = 100 * time.Millisecond
	fileSettleMax = 500 * time.Millisecond
)

// ParseEndpointsFile parses the text of an endpoints file: one host:port per line, in the forms
// --endpoints accepts; blank lines and everything after a '#' are ignored. It refuses a file
// with no endpoint.
func ParseEndpointsFile(text string) ([]Endpoint, error) {
	var eps []Endpoint
	for i, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		ep, err := ParseEndpoint(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		eps = append(eps, ep)
	}
	if len(eps) == 0 {
		return nil, errors.New("no endpoint in it; list one host:port per line")
	}
	return Normalize(eps), nil
}

// maxEndpointsFile bounds what is read of an endpoints file: a member list is a few hundred
// bytes, and a wrong path (a log, a device) must not fill the gateway's memory.
const maxEndpointsFile = 1 << 20

// ReadEndpointsFile reads and parses the endpoints file at path.
func ReadEndpointsFile(path string) ([]Endpoint, error) {
	// Only a regular file: reading a FIFO, a terminal or /dev/stdin would hold the gateway's
	// start-up or a reload for good. The file is opened without blocking (opening a FIFO
	// blocks until a writer comes) and checked on the opened descriptor, so that a swap
	// between a check and the open cannot slip one in.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file; give the path of a file that lists the endpoints", path)
	}
	text, err := io.ReadAll(io.LimitReader(f, maxEndpointsFile+1))
	if err != nil {
		return nil, err
	}
	if len(text) > maxEndpointsFile {
		return nil, fmt.Errorf("%s: larger than %d bytes; is it the right file?", path, maxEndpointsFile)
	}
	eps, err := ParseEndpointsFile(string(text))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return eps, nil
}

// File is the resolver service for --endpoints-file: it publishes the file's endpoints, and
// reads the file again on reload (SIGHUP) and whenever its directory changes. A file that does
// not parse, or lists the gateway itself, is refused with one log line and the current set
// stays. Connections already forwarded are never touched: only new ones follow the new set.
type File struct {
	path   string
	out    *Updates
	reload <-chan struct{}
	guard  *LoopGuard
	log    *zap.Logger
}

var _ suture.Service = (*File)(nil)

// NewFile returns the File service of path, publishing to out; a receive on reload reads the
// file again.
func NewFile(path string, out *Updates, reload <-chan struct{}, guard *LoopGuard, log *zap.Logger) *File {
	return &File{path: filepath.Clean(path), out: out, reload: reload, guard: guard, log: log.Named("resolver")}
}

// String names the service in supervisor events.
func (f *File) String() string { return "resolver/file" }

// Serve publishes the file's endpoints and follows its changes until ctx ends.
func (f *File) Serve(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", f.path, err)
	}
	defer w.Close()
	// The directory, not the file: editors and configuration tools replace the file by a
	// rename, which ends a watch on the file itself.
	if err := w.Add(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("watch %s: %w", filepath.Dir(f.path), err)
	}
	var refused string // the last refusal logged, so that unrelated changes do not repeat it
	f.load(ctx, "start", &refused)
	settle := time.NewTimer(0)
	<-settle.C
	var firstEvent time.Time // of the changes not read yet; zero when none waits
	for {
		select {
		case <-w.Events:
			now := time.Now()
			if firstEvent.IsZero() {
				firstEvent = now
			}
			if wait := min(fileSettle, firstEvent.Add(fileSettleMax).Sub(now)); wait > 0 {
				settle.Reset(wait)
			}
		case err := <-w.Errors:
			f.log.Warn("watching the endpoints file failed; it is still read again on SIGHUP", zap.String("path", f.path), zap.Error(err))
		case <-settle.C:
			firstEvent = time.Time{}
			f.load(ctx, "file changed", &refused)
		case <-f.reload:
			refused = ""
			f.load(ctx, "SIGHUP", &refused)
		case <-ctx.Done():
			settle.Stop()
			return ctx.Err()
		}
	}
}

// load reads the file and publishes its endpoints when they differ from the current set.
func (f *File) load(ctx context.Context, trigger string, refused *string) {
	set, err := ReadEndpointsFile(f.path)
	if err == nil {
		for _, ep := range set {
			if err = f.guard.Check(ctx, ep); err != nil {
				break
			}
		}
	}
	last, known := f.out.Latest()
	if err != nil {
		if msg := err.Error(); msg != *refused {
			*refused = msg
			f.log.Warn("endpoints file refused; keeping the current endpoint set", zap.String("path", f.path),
				zap.String("trigger", trigger), zap.Error(err), zap.Stringers("endpoints", last))
		}
		return
	}
	*refused = ""
	if known && slices.Equal(last, set) {
		if trigger == "SIGHUP" {
			f.log.Info("endpoints file unchanged", zap.String("path", f.path))
		}
		return
	}
	f.out.Publish(set)
	f.log.Info("endpoints file loaded", zap.String("path", f.path), zap.String("trigger", trigger), zap.Stringers("endpoints", set))
}
