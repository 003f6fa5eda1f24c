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
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcd-gateway/etcd-gateway/supervisor"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // could not bind, or failed while running
	exitUsage   = 2 // bad input
)

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
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, "Usage: etcd-gateway start [flags]\n\nRun 'etcd-gateway start --help' for the flags.")
		return exitOK
	default:
		fmt.Fprintf(stderr, "etcd-gateway: unknown command %q; run 'etcd-gateway start --help'\n", args[0])
		return exitUsage
	}
	opts, err := parseStart(args[1:], os.LookupEnv, stderrIsTerminal(), stdout)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "etcd-gateway: %v\n", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := opts.cfg.Validate(ctx); err != nil {
		fmt.Fprintf(stderr, "etcd-gateway: %v\n", err)
		return exitUsage
	}
	log, err := newLogger(opts.logLevel, opts.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "etcd-gateway: build logger: %v\n", err)
		return exitFailure
	}
	defer log.Sync()

	gw, err := supervisor.New(ctx, opts.cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return exitFailure
	}
	if err := gw.Serve(ctx); err != nil {
		log.Error("gateway failed", zap.Error(err))
		return exitFailure
	}
	return exitOK
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
