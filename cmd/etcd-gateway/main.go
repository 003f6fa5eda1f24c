// Command etcd-gateway is a per-host, transparent TCP gateway in front of an etcd cluster: a
// drop-in for `etcd gateway start`. See `etcd-gateway start --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/version"
	"github.com/etcd-gateway/etcd-gateway/supervisor"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // could not bind, or failed while running
	exitUsage   = 2 // bad input
)

const usage = `Usage: etcd-gateway <command> [flags]

Commands:
  start     run the gateway
  check     probe every endpoint once, print a table; exit 0 when one is healthy
  version   print the version, commit and Go version

Run 'etcd-gateway start --help' for the flags; check takes the same.`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "etcd-gateway: missing command; run 'etcd-gateway start --help'")
		return exitUsage
	}
	switch args[0] {
	case "start":
	case "check":
		return check(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "etcd-gateway %s\ncommit: %s\ngo: %s\n", version.Version(), version.Commit(), version.GoVersion())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "etcd-gateway: unknown command %q; run 'etcd-gateway start --help'\n", args[0])
		return exitUsage
	}
	// The first SIGINT or SIGTERM stops accepting and drains; a second one ends the drain at once.
	// The handlers stay until the process exits: a signal that comes after run returns must
	// not kill with a signal a gateway that stopped cleanly (systemd would call that a failure).
	stopSignals := make(chan os.Signal, 2)
	signal.Notify(stopSignals, syscall.SIGINT, syscall.SIGTERM)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	// SIGHUP reads --endpoints-file again; without one it does nothing, and never ends the
	// gateway (its default action), which would drop every connection on a reload.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	// Until the gateway is built, a stop signal cancels its start-up (DNS look-ups included).
	starting, signalledEarly := make(chan struct{}), make(chan bool, 1)
	go func() {
		select {
		case <-stopSignals:
			stop()
			signalledEarly <- true
		case <-starting:
			signalledEarly <- false
		}
	}()
	started := sync.OnceValue(func() bool {
		close(starting)
		return <-signalledEarly
	})
	defer started()
	reload := make(chan struct{}, 1)
	opts, plan, log, code := setUp(ctx, "start", args[1:], reload, stdout, stderr)
	if plan == nil {
		return code
	}
	defer log.Sync()

	gw, err := supervisor.New(ctx, plan)
	stoppedEarly := started()
	if err != nil && stoppedEarly {
		log.Info("stopped by a signal before the gateway started")
		return exitOK
	}
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return exitFailure
	}
	hupCtx, stopHUP := context.WithCancel(ctx)
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		forwardHUP(hupCtx, hup, reload, opts.cfg.EndpointsFile != "", log)
	}()
	defer func() {
		stopHUP()
		<-hupDone
	}()
	served := make(chan struct{})
	signalsDone := make(chan struct{})
	go func() {
		defer close(signalsDone)
		followStopSignals(stopSignals, served, stoppedEarly, stop, gw.CutDrain, log)
	}()
	defer func() {
		close(served)
		<-signalsDone
	}()
	if err := gw.Serve(ctx); err != nil {
		log.Error("gateway failed", zap.Error(err))
		return exitFailure
	}
	return exitOK
}

// followStopSignals turns the first SIGINT or SIGTERM into stop (stop accepting, then drain)
// and the second into cut (end the drain at once), until served is closed. stopped says the
// first came already, during start-up.
func followStopSignals(sigs <-chan os.Signal, served <-chan struct{}, stopped bool, stop, cut func(), log *zap.Logger) {
	for first := !stopped; ; first = false {
		select {
		case sig := <-sigs:
			if first {
				log.Info("stopping: no new connections; live ones may finish", zap.Stringer("signal", sig))
				stop()
				continue
			}
			cut()
		case <-served:
			return
		}
	}
}

// newLogger builds the one logger of the process, writing to stderr.
func newLogger(level zapcore.Level, format string) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(level)
	cfg.Encoding = format
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	if format == "console" {
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	return cfg.Build()
}

// forwardHUP turns SIGHUP into a reload of the endpoints file until ctx ends.
func forwardHUP(ctx context.Context, hup <-chan os.Signal, reload chan<- struct{}, haveFile bool, log *zap.Logger) {
	for {
		select {
		case <-hup:
			if !haveFile {
				log.Info("SIGHUP: nothing to reload without --endpoints-file")
				continue
			}
			select {
			case reload <- struct{}{}:
			default: // a reload is pending already
			}
		case <-ctx.Done():
			return
		}
	}
}

// setUp parses the flags of command, builds the logger, and prepares the gateway's plan, with
// reload as the signal that reads --endpoints-file again. When it returns no plan, the command
// ends with the exit status it returns: 0 after --help, 2 for bad input, 1 when the logger
// cannot be built.
func setUp(ctx context.Context, command string, args []string, reload <-chan struct{}, stdout, stderr io.Writer) (options, *supervisor.Plan, *zap.Logger, int) {
	opts, err := parseCommand(command, args, os.LookupEnv, stderrIsTerminal(), stdout)
	if errors.Is(err, errHelp) {
		return opts, nil, nil, exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "etcd-gateway: %v\n", err)
		return opts, nil, nil, exitUsage
	}
	log, err := newLogger(opts.logLevel, opts.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "etcd-gateway: build logger: %v\n", err)
		return opts, nil, nil, exitFailure
	}
	plan, err := supervisor.Prepare(ctx, opts.cfg, reload, log)
	if err != nil {
		fmt.Fprintf(stderr, "etcd-gateway: %v\n", err)
		return opts, nil, nil, exitUsage
	}
	for _, ep := range opts.portDefaulted {
		log.Info("endpoint given without a port; using etcd's client port", zap.Stringer("endpoint", ep))
	}
	return opts, plan, log, exitOK
}

// printMemberList prints the member list check read: what the gateway would follow.
func printMemberList(out io.Writer, list *supervisor.MemberListResult) {
	if list.Err != nil {
		fmt.Fprintf(out, "\nmember list: %v\n", list.Err)
		return
	}
	fmt.Fprintf(out, "\nmember list from %s, followed with --endpoints-auto-sync-interval:\n", list.From)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tCLIENT URLS")
	for _, m := range list.Members {
		role := "voter"
		switch {
		case m.Name == "":
			role = "not started"
		case m.Learner:
			role = "learner (not followed)"
		}
		fmt.Fprintf(tw, "%x\t%s\t%s\t%s\n", m.ID, m.Name, role, strings.Join(m.ClientURLs, ","))
	}
	tw.Flush()
}

// check is the check command: exit 0 when at least one endpoint is healthy, 1 when none is.
func check(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	_, plan, log, code := setUp(ctx, "check", args, nil, stdout, stderr)
	if plan == nil {
		return code
	}
	defer log.Sync()
	results, list, err := supervisor.Check(ctx, plan)
	if err != nil {
		fmt.Fprintf(stderr, "etcd-gateway: %v\n", err)
		return exitFailure
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tSOURCE\tSCHEME\tSTATE\tTOOK\tREASON/NOTE")
	healthy := 0
	for _, r := range results {
		if r.State == health.Healthy {
			healthy++
		}
		why := r.Reason
		if r.Note != "" {
			why = strings.TrimPrefix(why+"; "+r.Note, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Endpoint, r.Source, r.Scheme, health.Outcome(r.State, r.NoNews), r.Took.Round(time.Millisecond), why)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d of %d endpoints healthy\n", healthy, len(results))
	if list != nil {
		printMemberList(stdout, list)
	}
	if healthy == 0 {
		return exitFailure
	}
	return exitOK
}
