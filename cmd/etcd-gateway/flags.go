package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/resolver"
	"github.com/etcd-gateway/etcd-gateway/supervisor"
)

// envPrefix starts the environment variable of every flag: --retry-delay is ETCD_GATEWAY_RETRY_DELAY.
const envPrefix = "ETCD_GATEWAY_"

// etcdZeroRetryDelay is what etcd's gateway makes of --retry-delay=0; kept for drop-in use.
const etcdZeroRetryDelay = 5 * time.Minute

// options are the parsed flags of `etcd-gateway start`.
type options struct {
	cfg           supervisor.Config
	logLevel      zapcore.Level
	logFormat     string              // "json" or "console" once parsed
	portDefaulted []resolver.Endpoint // --endpoints entries given without a port: port 2379
}

// usageError is bad input: exit status 2, one line on stderr.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errHelp is returned when the user asked for --help; the usage has been written.
var errHelp = errors.New("help requested")

// durationFlag is a flag.Value for a non-negative duration with a unit, with errors that say how to write one.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration; write a number with a unit, such as 500ms, 30s or 1m", s)
	}
	if d < 0 {
		return fmt.Errorf("%q is negative; give a duration of 0 or more, such as 1s", s)
	}
	*f.d = d
	return nil
}

// modeFlag is a flag.Value for octal file permissions, such as 0660.
type modeFlag struct{ m *os.FileMode }

func (f modeFlag) String() string {
	if f.m == nil {
		return ""
	}
	return fmt.Sprintf("%04o", uint32(*f.m))
}

func (f modeFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("%q is not file permissions; write them in octal, such as 0660", s)
	}
	*f.m = os.FileMode(n)
	return nil
}

// endpointsFlag is --endpoints: a comma-separated list, and given several times the lists add
// up, as etcd's string-slice flags do. The first one given replaces the default.
type endpointsFlag struct {
	list *string
	set  bool
}

func (f *endpointsFlag) String() string {
	if f.list == nil {
		return ""
	}
	return *f.list
}

func (f *endpointsFlag) Set(s string) error {
	if f.set {
		*f.list += "," + s
		return nil
	}
	*f.list, f.set = s, true
	return nil
}

// levelFlag is a flag.Value for a zap level.
type levelFlag struct{ l *zapcore.Level }

func (f levelFlag) String() string {
	if f.l == nil {
		return ""
	}
	return f.l.String()
}

func (f levelFlag) Set(s string) error {
	if err := f.l.UnmarshalText([]byte(s)); err != nil {
		return fmt.Errorf("%q is not a log level; use debug, info, warn or error", s)
	}
	return nil
}

// checkFlag is a flag.Value for --health-check.
type checkFlag struct{ m *health.CheckMode }

func (f checkFlag) String() string {
	if f.m == nil {
		return ""
	}
	return string(*f.m)
}

func (f checkFlag) Set(s string) error {
	m, err := health.ParseCheckMode(s)
	if err != nil {
		return err
	}
	*f.m = m
	return nil
}

// formatFlag is a flag.Value for the log format.
type formatFlag struct{ s *string }

func (f formatFlag) String() string {
	if f.s == nil {
		return ""
	}
	return *f.s
}

func (f formatFlag) Set(s string) error {
	if s != "json" && s != "console" && s != "auto" {
		return fmt.Errorf("%q is not a log format; use json, console or auto", s)
	}
	*f.s = s
	return nil
}

// parseCommand parses the flags of command, "start" or "check", which share them. Flags left
// unset on the command line are read from ETCD_GATEWAY_<FLAG> through getenv; the command line
// wins. stderrIsTerminal picks the default log format. Usage goes to out when --help is given.
func parseCommand(command string, args []string, getenv func(string) (string, bool), stderrIsTerminal bool, out io.Writer) (options, error) {
	opts := options{
		cfg: supervisor.Config{
			RetryDelay:      time.Minute,
			DialTimeout:     time.Second,
			ShutdownTimeout: 10 * time.Second,
			SocketMode:      0o666,
			Health:          supervisor.DefaultHealth(),
			Rebalance:       true,
			RebalanceQuiet:  2 * time.Second,
		},
		logLevel:  zapcore.InfoLevel,
		logFormat: "auto",
	}
	endpoints := "127.0.0.1:2379"
	fs := flag.NewFlagSet("etcd-gateway "+command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&endpointsFlag{list: &endpoints}, "endpoints", "comma-separated etcd client addresses (host:port; a host alone means port 2379) to forward to; given several times, the lists add up")
	fs.StringVar(&opts.cfg.EndpointsFile, "endpoints-file", "", "file listing the etcd client addresses, one host:port per line ('#' starts a comment); read again on SIGHUP and when it changes; instead of --endpoints")
	fs.StringVar(&opts.cfg.ListenAddr, "listen-addr", "127.0.0.1:23790", "address to accept clients on: host:port, or unix:///PATH for a Unix socket")
	fs.Var(modeFlag{&opts.cfg.SocketMode}, "listen-socket-mode", "permissions of the Unix socket of --listen-addr=unix:///PATH, in octal")
	fs.Var(durationFlag{&opts.cfg.RetryDelay}, "retry-delay", "how long a failed endpoint waits before it is tried again (0 means 5m, as etcd's gateway)")
	fs.Var(durationFlag{&opts.cfg.DialTimeout}, "dial-timeout", "bound of each connection attempt to a member; a client is moved to the next member after it")
	fs.Var(durationFlag{&opts.cfg.ShutdownTimeout}, "shutdown-timeout", "on SIGINT or SIGTERM, how long live connections may finish before they are closed")
	fs.Var(durationFlag{&opts.cfg.AutoSyncInterval}, "endpoints-auto-sync-interval", "how often to read the cluster's member list and follow it (members added, removed, replaced); the starting endpoints become seeds; 0 turns it off")
	fs.StringVar(&opts.cfg.MetricsAddr, "metrics-addr", "", "address (host:port) of /metrics (Prometheus), /healthz, /readyz and /status; off when empty")
	fs.Var(levelFlag{&opts.logLevel}, "log-level", "debug, info, warn or error")
	fs.Var(formatFlag{&opts.logFormat}, "log-format", "json, console, or auto: console when stderr is a terminal, json otherwise")
	h := &opts.cfg.Health
	fs.Var(checkFlag{&h.Check}, "health-check", "how members are probed: readyz (GET /readyz, falling back to /health, then TCP), health (GET /health, falling back to TCP) or tcp")
	fs.Var(durationFlag{&h.Interval}, "health-interval", "time between probes of each member")
	fs.Var(durationFlag{&h.Timeout}, "health-timeout", "bound of each probe; a member that does not answer in time is down")
	fs.Var(durationFlag{&h.Heartbeat}, "health-heartbeat-interval", "between probes, while clients are connected, how often to check that each member's process answers at all (GET /version); two misses in a row make it down at once; 0 turns it off")
	fs.Var(durationFlag{&h.HeartbeatTimeout}, "health-heartbeat-timeout", "bound of each heartbeat")
	fs.IntVar(&h.Rise, "health-rise", h.Rise, "consecutive better probe results before a member's state improves")
	fs.IntVar(&h.Fall, "health-fall", h.Fall, "consecutive worse probe results before a member's state worsens")
	fs.StringVar(&h.CertFile, "health-cert-file", "", "client certificate for probing TLS members that require one")
	fs.StringVar(&h.KeyFile, "health-key-file", "", "key of --health-cert-file")
	fs.StringVar(&opts.cfg.TrustedCAFile, "trusted-ca-file", "", "CA that verifies TLS members: those from _etcd-client-ssl records (default: the system roots) and listed ones (default: not verified; clients still verify end to end)")
	fs.BoolVar(&h.Evict, "evict-unhealthy", h.Evict, "close the connections of a member that turns down, or degraded while another is healthy, so its clients reconnect to a healthy one")
	fs.BoolVar(&opts.cfg.Rebalance, "rebalance", opts.cfg.Rebalance, "when the healthy members' loads drift apart (a member came back or was added), close quiet connections on the most loaded, at most 5 a second, so their clients reconnect to the least loaded")
	fs.Var(durationFlag{&opts.cfg.RebalanceQuiet}, "rebalance-quiet-time", "how long a connection must have carried no byte, the last ones to its client, before rebalancing may move it")
	var discovery srvFlags
	discovery.register(fs)
	help := fs.Bool("help", false, "show this help")
	fs.Usage = func() {} // the flag package calls it on every error; errors get one line instead

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(out, command, fs)
			return options{}, errHelp
		}
		return options{}, usagef("%s; run 'etcd-gateway %s --help' for the flags", flagError(err), command)
	}
	if *help {
		writeUsage(out, command, fs)
		return options{}, errHelp
	}
	if fs.NArg() > 0 {
		return options{}, usagef("unexpected argument %q; flags are written --name=value, see 'etcd-gateway %s --help'", fs.Arg(0), command)
	}
	if err := applyEnv(fs, getenv); err != nil {
		return options{}, err
	}
	srv, err := discovery.config(fs, opts.cfg.DialTimeout)
	if err != nil {
		return options{}, err
	}
	opts.cfg.Discovery = srv
	if path := opts.cfg.EndpointsFile; path != "" {
		if explicit(fs, "endpoints") || srv != nil {
			return options{}, usagef("--endpoints-file replaces --endpoints and --discovery-srv; give only one of them")
		}
		eps, err := resolver.ReadEndpointsFile(path)
		if err != nil {
			return options{}, usagef("--endpoints-file: %v", err)
		}
		opts.cfg.Endpoints = eps
	} else if srv == nil || explicit(fs, "endpoints") {
		// With discovery, --endpoints is a fallback only when the user gave it: never the default.
		eps, err := resolver.ParseEndpoints(endpoints)
		if err != nil {
			return options{}, usagef("--endpoints: %v", err)
		}
		opts.cfg.Endpoints = eps
		opts.portDefaulted = resolver.PortsDefaulted(endpoints)
	}
	if opts.logFormat == "auto" {
		opts.logFormat = "json"
		if stderrIsTerminal {
			opts.logFormat = "console"
		}
	}
	if opts.cfg.RetryDelay == 0 {
		opts.cfg.RetryDelay = etcdZeroRetryDelay
	}
	return opts, nil
}

// explicit reports whether the flag was set, on the command line or through the environment.
func explicit(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// applyEnv sets every flag not given on the command line from its environment variable.
func applyEnv(fs *flag.FlagSet, getenv func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] || f.Name == "help" {
			return
		}
		name := envName(f.Name)
		v, ok := getenv(name)
		if !ok {
			return
		}
		if setErr := fs.Set(f.Name, v); setErr != nil {
			err = usagef("environment variable %s: %v", name, setErr)
		}
	})
	return err
}

// envName is the environment variable for a flag: retry-delay is ETCD_GATEWAY_RETRY_DELAY.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagError rewrites the flag package's messages to name flags the way users write them.
func flagError(err error) string {
	msg := err.Error()
	msg = strings.Replace(msg, "flag provided but not defined: -", "unknown flag --", 1)
	msg = strings.Replace(msg, " for flag -", " for --", 1)
	return msg
}

func writeUsage(out io.Writer, command string, fs *flag.FlagSet) {
	fmt.Fprintf(out, "Usage: etcd-gateway %s [flags]\n\n", command)
	if command == "check" {
		fmt.Fprintf(out, "Resolves the endpoints as start would, probes each once, prints a table and exits 0\nwhen at least one is healthy, 1 when none is, 2 on bad input. It takes the flags of start.\n")
	} else {
		fmt.Fprintf(out, "Forwards every TCP connection made to --listen-addr to an available etcd member.\n")
	}
	fmt.Fprintf(out, "Every flag can also be set as %s<FLAG>, e.g. %s; the command line wins.\n\nFlags:\n",
		envPrefix, envName("retry-delay"))
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(out, "  --%s\n\t%s%s\n", f.Name, f.Usage, def)
	})
}

// srvFlags are the SRV discovery flags: etcd's four, plus the DNS server and refresh bounds.
type srvFlags struct {
	domain, name, dnsServer string
	insecure                bool
	minRefresh, maxRefresh  time.Duration
}

func (s *srvFlags) register(fs *flag.FlagSet) {
	s.minRefresh, s.maxRefresh = time.Second, 5*time.Minute
	fs.StringVar(&s.domain, "discovery-srv", "", "domain whose SRV records (_etcd-client-ssl._tcp and _etcd-client._tcp) list the members; re-read as their TTL says")
	fs.StringVar(&s.name, "discovery-srv-name", "", "suffix of the SRV names: _etcd-client-ssl-NAME._tcp and _etcd-client-NAME._tcp")
	fs.BoolVar(&s.insecure, "insecure-discovery", false, "use members from _etcd-client-ssl records, and probe them, without verifying their TLS certificate")
	fs.StringVar(&s.dnsServer, "dns-server", "", "DNS server (host:port) for SRV discovery (default: those in /etc/resolv.conf)")
	fs.Var(durationFlag{&s.minRefresh}, "discovery-srv-min-refresh", "shortest wait between SRV lookups, whatever the TTL")
	fs.Var(durationFlag{&s.maxRefresh}, "discovery-srv-max-refresh", "longest wait between SRV lookups, whatever the TTL; also the longest backoff after failures")
}

// config returns the discovery configuration, nil without --discovery-srv. A discovery flag
// given without --discovery-srv is refused rather than ignored.
func (s *srvFlags) config(fs *flag.FlagSet, dialTimeout time.Duration) (*resolver.SRVConfig, error) {
	if s.domain == "" {
		var stray string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "discovery-srv-name", "insecure-discovery", "dns-server", "discovery-srv-min-refresh", "discovery-srv-max-refresh":
				stray = f.Name
			}
		})
		if stray != "" {
			return nil, usagef("--%s only applies to SRV discovery; add --discovery-srv=DOMAIN or remove it", stray)
		}
		return nil, nil
	}
	return &resolver.SRVConfig{
		Domain:      s.domain,
		ServiceName: s.name,
		DNSServer:   s.dnsServer,
		ResolvConf:  "/etc/resolv.conf",
		Insecure:    s.insecure,
		MinRefresh:  s.minRefresh,
		MaxRefresh:  s.maxRefresh,
		DialTimeout: dialTimeout,
	}, nil
}

// stderrIsTerminal reports whether stderr is a character device, i.e. a person is watching.
func stderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
