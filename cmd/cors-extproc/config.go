package main

import (
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/certs"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// envPrefix prefixes the environment variable that stands in for each flag: --grpc-addr is
// CORS_EXTPROC_GRPC_ADDR. A flag given on the command line wins over its variable.
const envPrefix = "CORS_EXTPROC_"

// config is the server's validated configuration.
type config struct {
	grpcAddr             string
	adminAddr            string
	namespace            string
	policiesFile         string
	defaultPolicy        string
	logLevel             slog.Level
	logFormat            string
	shutdownGrace        time.Duration
	drainPeriod          time.Duration
	keepaliveTime        time.Duration
	keepaliveTimeout     time.Duration
	maxConcurrentStreams uint
	cacheSize            int
	reloadInterval       time.Duration
	reportOnly           bool
	limits               processor.Limits
	maxRecvMsgSize       int
	tls                  certs.Files
	tlsReloadInterval    time.Duration
	dynamicMetadata      bool
	dynamicMetadataNS    string
	mode                 processor.Mode
	showVersion          bool
}

// sentMetadataNamespace is the dynamic metadata namespace the server sends, "" for none.
func (c config) sentMetadataNamespace() string {
	if c.dynamicMetadata {
		return c.dynamicMetadataNS
	}
	return ""
}

// errHelp is returned after -h asked for the usage; run prints it and succeeds.
var errHelp = flag.ErrHelp

// noEnvFlags are the server flags that have no environment variable.
var noEnvFlags = []string{"version"}

// serverSynopsis heads the server's --help: what the program is, how to call it, its commands.
func serverSynopsis() string {
	var b strings.Builder
	b.WriteString(`usage: cors-extproc [flags]               serve ext_proc (gRPC) and the admin listener
       cors-extproc COMMAND [args]       run an operator tool (COMMAND --help for its flags)

Commands:
`)
	for _, c := range commandList() {
		fmt.Fprintf(&b, "  %-12s %s\n", c.name, c.summary)
	}
	b.WriteString(`
Every flag can also be set as the environment variable shown beside it; a flag given on the
command line wins, an unknown CORS_EXTPROC_ variable is an error.
`)
	return b.String()
}

// serverFlags defines the server's flags on c.
func serverFlags(c *config, logLevel, mode *string) *flagSet {
	fs := newFlagSet("cors-extproc", serverSynopsis())
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":9002", "address of the ext_proc gRPC listener (also the gRPC health service and reflection)")
	fs.StringVar(&c.adminAddr, "admin-addr", ":9090", "address of the HTTP admin listener (/metrics, /healthz, /readyz); empty disables it")
	fs.StringVar(&c.namespace, "metadata-namespace", "cors", "filter_metadata namespace that holds a route's CORS policy")
	fs.StringVar(&c.policiesFile, "policies", "", "YAML file of named policies (name: policy), which ref and the Envoy Gateway annotation name")
	fs.StringVar(&c.defaultPolicy, "default-policy", "", "named policy for requests whose route names none (needs --policies)")
	fs.StringVar(logLevel, "log-level", "info", "log level: debug (one line per decision), info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 15*time.Second, "time from SIGTERM until streams still open are cut")
	fs.DurationVar(&c.drainPeriod, "drain-period", 5*time.Second, "time after SIGTERM spent reporting NOT_SERVING before the listener closes, so Envoy's health checks move traffic away")
	fs.DurationVar(&c.keepaliveTime, "grpc-keepalive-time", 30*time.Second, "ping an idle client connection after this long")
	fs.DurationVar(&c.keepaliveTimeout, "grpc-keepalive-timeout", 10*time.Second, "close a connection whose ping is not answered within this long")
	fs.UintVar(&c.maxConcurrentStreams, "grpc-max-concurrent-streams", 1000, "streams (in-flight HTTP requests) per Envoy connection; Envoy opens another connection beyond it")
	fs.IntVar(&c.cacheSize, "policy-cache-size", 10000, "distinct policy sources kept compiled")
	fs.IntVar(&c.limits.MaxSourceBytes, "max-policy-bytes", processor.DefaultLimits.MaxSourceBytes, "longest policy source (x-cors-policy value, route or virtual-host metadata text, measured on one line without Envoy 1.37.0's debug token) parsed; a longer one is an unusable policy")
	fs.IntVar(&c.limits.Policy.MaxOrigins, "max-origins", processor.DefaultLimits.Policy.MaxOrigins, "most origins elements in one policy; more make it invalid")
	fs.IntVar(&c.limits.Policy.MaxRegexInsts, "max-regex-size", processor.DefaultLimits.Policy.MaxRegexInsts, "largest regex origins element, in RE2 program instructions; a larger one makes the policy invalid")
	fs.IntVar(&c.limits.MaxHeaderValueBytes, "max-header-value-bytes", processor.DefaultLimits.MaxHeaderValueBytes, "longest Origin or access-control-request-* value decided on; a request with a longer one is granted nothing (preflight 403), so no oversized value is ever echoed")
	fs.IntVar(&c.maxRecvMsgSize, "grpc-max-recv-msg-size", 4<<20, "largest ext_proc message accepted, in bytes (gRPC answers RESOURCE_EXHAUSTED past it, and Envoy fails the request; Envoy's own default limit on request headers is 60 KiB)")
	fs.StringVar(&c.tls.Cert, "tls-cert", "", "PEM certificate (and intermediates) of the gRPC listener; with --tls-key, the listener speaks TLS only (the admin listener stays plaintext for Prometheus and probes)")
	fs.StringVar(&c.tls.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tls.ClientCA, "tls-client-ca", "", "PEM CA certificates client certificates must chain to: mutual TLS (needs --tls-cert)")
	fs.DurationVar(&c.tlsReloadInterval, "tls-reload-interval", 30*time.Second, "how often the TLS files are checked; a renewed certificate (cert-manager) is used for new connections, streams in flight are untouched")
	fs.DurationVar(&c.reloadInterval, "policies-reload-interval", 5*time.Second, "how often the --policies file is checked for changes; 0 disables hot reload")
	fs.BoolVar(&c.reportOnly, "report-only", false, "report-only mode for every policy: decisions are taken, counted and logged, nothing is changed")
	fs.BoolVar(&c.dynamicMetadata, "dynamic-metadata", false, "return each decision to Envoy as dynamic metadata, for its access log (costs about 14 allocations per request)")
	fs.StringVar(&c.dynamicMetadataNS, "dynamic-metadata-namespace", "cors-extproc", "namespace of the dynamic metadata sent to Envoy (the decision, and the response headers for Envoy's header filter); list it in Envoy's metadata_options.receiving_namespaces")
	fs.StringVar(mode, "mode", "two-phase", "how actual responses get their headers: two-phase (in ext_proc's response phase) or one-trip (from the request phase's metadata, by Envoy's header filter: one gRPC round trip per request; needs that filter, see the README)")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	return fs
}

// parseConfig reads flags, then the environment for flags not given, and validates the result
// as a whole: every problem is reported at once, each naming the flag or the variable that set
// the value (the style of envoyproxy/ai-gateway's extproc).
func parseConfig(args, environ []string) (config, error) {
	var (
		c              config
		logLevel, mode string
	)
	fs := serverFlags(&c, &logLevel, &mode)
	if err := fs.parse(args); err != nil {
		return c, err
	}
	if len(fs.args) > 0 {
		fs.addProblem(fmt.Errorf("unexpected arguments: %s (commands: %s)", strings.Join(fs.args, " "), commandNames()))
	}
	fs.parseEnv(environ, noEnvFlags...)

	if err := c.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		fs.problem("log-level", "want debug, info, warn or error")
	}
	if c.logFormat != "json" && c.logFormat != "text" {
		fs.problem("log-format", "want json or text")
	}
	if c.grpcAddr == "" {
		fs.problem("grpc-addr", "must not be empty")
	}
	if c.grpcAddr != "" && c.grpcAddr == c.adminAddr && !strings.HasSuffix(c.grpcAddr, ":0") {
		fs.problem("admin-addr", "same as %s", fs.name("grpc-addr"))
	}
	if c.namespace == "" {
		fs.problem("metadata-namespace", "must not be empty")
	}
	if c.defaultPolicy != "" && c.policiesFile == "" {
		fs.problem("default-policy", "needs --policies")
	}
	if c.shutdownGrace <= 0 {
		fs.problem("shutdown-grace", "must be positive")
	}
	if c.drainPeriod < 0 || (c.shutdownGrace > 0 && c.drainPeriod >= c.shutdownGrace) {
		fs.problem("drain-period", "must be at least 0 and less than %s %v", fs.name("shutdown-grace"), c.shutdownGrace)
	}
	for _, name := range []string{"grpc-keepalive-time", "grpc-keepalive-timeout", "tls-reload-interval"} {
		if d, _ := fs.Lookup(name).Value.(flag.Getter).Get().(time.Duration); d <= 0 {
			fs.problem(name, "must be positive")
		}
	}
	for _, l := range []struct {
		flag  string
		value int
	}{
		{"max-policy-bytes", c.limits.MaxSourceBytes}, {"max-origins", c.limits.Policy.MaxOrigins},
		{"max-regex-size", c.limits.Policy.MaxRegexInsts}, {"max-header-value-bytes", c.limits.MaxHeaderValueBytes},
		{"grpc-max-recv-msg-size", c.maxRecvMsgSize}, {"grpc-max-concurrent-streams", int(min(c.maxConcurrentStreams, 1<<31-1))},
		{"policy-cache-size", c.cacheSize},
	} {
		if l.value <= 0 {
			fs.problem(l.flag, "must be positive")
		}
	}
	if (c.tls.Cert == "") != (c.tls.Key == "") {
		fs.addProblem(fmt.Errorf("%s and %s go together", fs.name("tls-cert"), fs.name("tls-key")))
	}
	if c.tls.ClientCA != "" && c.tls.Cert == "" {
		fs.problem("tls-client-ca", "needs --tls-cert and --tls-key")
	}
	if c.reloadInterval < 0 {
		fs.problem("policies-reload-interval", "must be at least 0")
	}
	var err error
	if c.mode, err = processor.ParseMode(mode); err != nil {
		fs.problem("mode", "%v", err)
	}
	switch {
	case c.dynamicMetadata && c.dynamicMetadataNS == "":
		fs.problem("dynamic-metadata-namespace", "must not be empty with --dynamic-metadata")
	case c.mode == processor.ModeOneTrip && c.dynamicMetadataNS == "":
		fs.problem("dynamic-metadata-namespace", "must not be empty with --mode one-trip (it carries the response headers)")
	}
	return c, fs.err()
}
