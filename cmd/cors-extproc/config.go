package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
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

// errHelp is returned after -h printed the usage; run treats it as success.
var errHelp = flag.ErrHelp

// parseConfig reads flags, then the environment for flags not given, and validates the result
// as a whole: every problem is reported at once (the style of envoyproxy/ai-gateway's extproc).
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var (
		c        config
		logLevel string
		mode     string
	)
	fs := flag.NewFlagSet("cors-extproc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":9002", "address of the ext_proc gRPC listener")
	fs.StringVar(&c.adminAddr, "admin-addr", ":9090", "address of the HTTP admin listener (/metrics, /healthz, /readyz); empty disables it")
	fs.StringVar(&c.namespace, "metadata-namespace", "cors", "filter_metadata namespace that holds a route's CORS policy")
	fs.StringVar(&c.policiesFile, "policies", "", "YAML file of named policies (name: policy), for `ref` and Envoy Gateway annotations")
	fs.StringVar(&c.defaultPolicy, "default-policy", "", "named policy for requests whose route names none (needs --policies)")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or text")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 15*time.Second, "time from SIGTERM until streams still open are cut")
	fs.DurationVar(&c.drainPeriod, "drain-period", 5*time.Second, "time after SIGTERM spent reporting NOT_SERVING before the listener closes, so Envoy's health checks move traffic away")
	fs.DurationVar(&c.keepaliveTime, "grpc-keepalive-time", 30*time.Second, "ping an idle client connection after this long")
	fs.DurationVar(&c.keepaliveTimeout, "grpc-keepalive-timeout", 10*time.Second, "close a connection whose ping is not answered within this long")
	fs.UintVar(&c.maxConcurrentStreams, "grpc-max-concurrent-streams", 1000, "streams (in-flight HTTP requests) per Envoy connection; Envoy opens another connection beyond it")
	fs.IntVar(&c.cacheSize, "policy-cache-size", 10000, "distinct policy sources kept compiled")
	fs.IntVar(&c.limits.MaxSourceBytes, "max-policy-bytes", processor.DefaultLimits.MaxSourceBytes, "longest policy source (x-cors-policy value, route or virtual-host metadata text) parsed; a longer one is an unusable policy")
	fs.IntVar(&c.limits.Policy.MaxOrigins, "max-origins", processor.DefaultLimits.Policy.MaxOrigins, "most origins elements in one policy")
	fs.IntVar(&c.limits.Policy.MaxRegexInsts, "max-regex-size", processor.DefaultLimits.Policy.MaxRegexInsts, "largest regex origins element, in RE2 program instructions")
	fs.IntVar(&c.limits.MaxHeaderValueBytes, "max-header-value-bytes", processor.DefaultLimits.MaxHeaderValueBytes, "longest Origin or access-control-request-* value decided on; a request with a longer one is granted nothing")
	fs.IntVar(&c.maxRecvMsgSize, "grpc-max-recv-msg-size", 4<<20, "largest ext_proc message accepted, in bytes (gRPC answers RESOURCE_EXHAUSTED past it, and Envoy fails the request)")
	fs.StringVar(&c.tls.Cert, "tls-cert", "", "PEM certificate (and intermediates) of the gRPC listener; with --tls-key, the listener speaks TLS only")
	fs.StringVar(&c.tls.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tls.ClientCA, "tls-client-ca", "", "PEM CA certificates client certificates must chain to: mutual TLS (needs --tls-cert)")
	fs.DurationVar(&c.tlsReloadInterval, "tls-reload-interval", 30*time.Second, "how often the TLS files are checked for a renewed certificate")
	fs.DurationVar(&c.reloadInterval, "policies-reload-interval", 5*time.Second, "how often the --policies file is checked for changes; 0 disables hot reload")
	fs.BoolVar(&c.reportOnly, "report-only", false, "report-only mode for every policy: decisions are counted and logged, nothing is changed")
	fs.BoolVar(&c.dynamicMetadata, "dynamic-metadata", false, "return each decision to Envoy as dynamic metadata, for its access log (costs about 14 allocations per request)")
	fs.StringVar(&c.dynamicMetadataNS, "dynamic-metadata-namespace", "cors-extproc", "namespace of the dynamic metadata sent to Envoy (the decision, and the response headers for Envoy's header filter); list it in Envoy's metadata_options.receiving_namespaces")
	fs.StringVar(&mode, "mode", "two-phase", "how actual responses get their headers: two-phase (in ext_proc's response phase) or one-trip (from the request phase's metadata, by Envoy's header filter: one gRPC round trip per request; needs that filter, see the README)")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}

	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && !given[f.Name] {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: invalid value for --%s: %v", env, v, f.Name, err))
				// Back to the default, so that the checks below report only this problem.
				_ = f.Value.Set(f.DefValue)
			}
		}
	})

	if err := c.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel))
	}
	if c.logFormat != "json" && c.logFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format %q: want json or text", c.logFormat))
	}
	if c.grpcAddr == "" {
		errs = append(errs, errors.New("--grpc-addr: must not be empty"))
	}
	if c.grpcAddr != "" && c.grpcAddr == c.adminAddr && !strings.HasSuffix(c.grpcAddr, ":0") {
		errs = append(errs, fmt.Errorf("--admin-addr %q: same as --grpc-addr", c.adminAddr))
	}
	if c.namespace == "" {
		errs = append(errs, errors.New("--metadata-namespace: must not be empty"))
	}
	if c.defaultPolicy != "" && c.policiesFile == "" {
		errs = append(errs, fmt.Errorf("--default-policy %q: needs --policies", c.defaultPolicy))
	}
	if c.shutdownGrace <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-grace %v: must be positive", c.shutdownGrace))
	}
	if c.drainPeriod < 0 || (c.shutdownGrace > 0 && c.drainPeriod >= c.shutdownGrace) {
		errs = append(errs, fmt.Errorf("--drain-period %v: must be at least 0 and less than --shutdown-grace %v", c.drainPeriod, c.shutdownGrace))
	}
	if c.keepaliveTime <= 0 {
		errs = append(errs, fmt.Errorf("--grpc-keepalive-time %v: must be positive", c.keepaliveTime))
	}
	if c.keepaliveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--grpc-keepalive-timeout %v: must be positive", c.keepaliveTimeout))
	}
	if c.maxConcurrentStreams == 0 {
		errs = append(errs, errors.New("--grpc-max-concurrent-streams 0: must be positive"))
	}
	for _, l := range []struct {
		flag  string
		value int
	}{
		{"--max-policy-bytes", c.limits.MaxSourceBytes}, {"--max-origins", c.limits.Policy.MaxOrigins},
		{"--max-regex-size", c.limits.Policy.MaxRegexInsts}, {"--max-header-value-bytes", c.limits.MaxHeaderValueBytes},
		{"--grpc-max-recv-msg-size", c.maxRecvMsgSize},
	} {
		if l.value <= 0 {
			errs = append(errs, fmt.Errorf("%s %d: must be positive", l.flag, l.value))
		}
	}
	if (c.tls.Cert == "") != (c.tls.Key == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.tls.ClientCA != "" && c.tls.Cert == "" {
		errs = append(errs, errors.New("--tls-client-ca: needs --tls-cert and --tls-key"))
	}
	if c.tlsReloadInterval <= 0 {
		errs = append(errs, fmt.Errorf("--tls-reload-interval %v: must be positive", c.tlsReloadInterval))
	}
	if c.reloadInterval < 0 {
		errs = append(errs, fmt.Errorf("--policies-reload-interval %v: must be at least 0", c.reloadInterval))
	}
	var err error
	if c.mode, err = processor.ParseMode(mode); err != nil {
		errs = append(errs, fmt.Errorf("--mode: %w", err))
	}
	switch {
	case c.dynamicMetadata && c.dynamicMetadataNS == "":
		errs = append(errs, errors.New("--dynamic-metadata-namespace: must not be empty with --dynamic-metadata"))
	case c.mode == processor.ModeOneTrip && c.dynamicMetadataNS == "":
		errs = append(errs, errors.New("--dynamic-metadata-namespace: must not be empty with --mode one-trip (it carries the response headers)"))
	}
	if c.cacheSize <= 0 {
		errs = append(errs, fmt.Errorf("--policy-cache-size %d: must be positive", c.cacheSize))
	}
	return c, errors.Join(errs...)
}
