package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/cors-extproc/cors-extproc/internal/certs"
	"github.com/cors-extproc/cors-extproc/internal/policy"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// command is one of the operator tools: `cors-extproc NAME [args]`.
type command struct {
	name    string
	summary string // one line, for --help
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commandList is every command, in the order --help lists them; without one of their names
// first, cors-extproc serves.
func commandList() []command {
	return []command{
		{"validate", "check policies and Envoy configuration before they are applied", runValidate},
		{"explain", "show how the server treats one request on one route, step by step", runExplain},
		{"import-kong", "turn the CORS plugins of a Kong configuration into named policies", runImportKong},
		{"version", "print the version", runVersion},
		{"help", "print this help, or a command's (help COMMAND)", runHelp},
	}
}

func commandNames() string {
	var names []string
	for _, c := range commandList() {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// run is the whole program: main only adds the signal context and the exit status. A first
// argument that is not a flag names a command; a misspelt one is refused with the nearest.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return serve(ctx, args, stdout, stderr)
	}
	cmd, err := findCommand(args[0])
	if err != nil {
		return err
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func findCommand(name string) (command, error) {
	var names []string
	for _, c := range commandList() {
		if c.name == name {
			return c, nil
		}
		names = append(names, c.name)
	}
	if near := closest(name, names); near != "" {
		return command{}, fmt.Errorf("unknown command %q; did you mean %s? (commands: %s)", name, near, commandNames())
	}
	return command{}, fmt.Errorf("unknown command %q (commands: %s; the server takes only flags)", name, commandNames())
}

// runHelp is `cors-extproc help [COMMAND]`: the server's --help, or the command's.
func runHelp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch len(args) {
	case 0:
		return serve(ctx, []string{"--help"}, stdout, stderr)
	case 1:
		cmd, err := findCommand(args[0])
		if err != nil {
			return err
		}
		return cmd.run(ctx, []string{"--help"}, stdout, stderr)
	}
	return fmt.Errorf("help: want at most one COMMAND, got %s", strings.Join(args, " "))
}

// runVersion is `cors-extproc version`, the same as --version.
func runVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("version: unexpected arguments: %s", strings.Join(args, " "))
	}
	_, err := fmt.Fprintln(stdout, "cors-extproc", buildVersion())
	return err
}

// serve runs the ext_proc server until ctx ends, then drains it.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, os.Environ())
	if errors.Is(err, errHelp) {
		serverFlags(&config{}, new(string), new(string)).printHelp(stdout, true, noEnvFlags...)
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.showVersion {
		return runVersion(ctx, nil, stdout, stderr)
	}
	log := newLogger(cfg, stderr)

	named, policyData, err := loadPolicies(cfg.policiesFile, cfg.limits.Policy, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := registerBuildInfo(reg, runtime.Version()); err != nil {
		return err
	}
	proc, err := processor.New(processor.Options{
		Namespace:                cfg.namespace,
		Policies:                 named,
		DefaultPolicy:            cfg.defaultPolicy,
		CacheSize:                cfg.cacheSize,
		Logger:                   log,
		Registerer:               reg,
		ReportOnly:               cfg.reportOnly,
		Limits:                   cfg.limits,
		DynamicMetadataNamespace: cfg.sentMetadataNamespace(),
		Mode:                     cfg.mode,
		HeadersNamespace:         cfg.dynamicMetadataNS,
	})
	if err != nil {
		return err
	}
	if cfg.policiesFile != "" && cfg.reloadInterval > 0 {
		reloader, err := newPolicyReloader(cfg.policiesFile, policyData, cfg.limits.Policy, proc, log, reg)
		if err != nil {
			return err
		}
		reloadCtx, stopReload := context.WithCancel(ctx)
		defer stopReload()
		go reloader.run(reloadCtx, cfg.reloadInterval)
	}

	grpcLis, err := net.Listen("tcp", cfg.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	var adminLis net.Listener
	if cfg.adminAddr != "" {
		if adminLis, err = net.Listen("tcp", cfg.adminAddr); err != nil {
			grpcLis.Close()
			return fmt.Errorf("--admin-addr: %w", err)
		}
	}

	serverOpts, err := transportOptions(ctx, cfg, log, reg)
	if err != nil {
		grpcLis.Close()
		if adminLis != nil {
			adminLis.Close()
		}
		return err
	}
	srv := grpc.NewServer(append(serverOpts,
		grpc.MaxConcurrentStreams(uint32(min(cfg.maxConcurrentStreams, 1<<32-1))),
		grpc.MaxRecvMsgSize(cfg.maxRecvMsgSize),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.keepaliveTime, Timeout: cfg.keepaliveTimeout}),
		// Envoy's HTTP/2 connection_keepalive may ping every few seconds, even with no stream
		// open; grpc-go's default policy (5 minutes, no pings without streams) would answer
		// such pings with GOAWAY and cut every stream on the connection.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)...)
	extprocv3.RegisterExternalProcessorServer(srv, proc)
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(srv, healthSrv)
	healthSrv.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(srv)

	var draining atomic.Bool
	var admin *http.Server
	if adminLis != nil {
		admin = &http.Server{Handler: adminHandler(reg, &draining), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener failed", "error", err)
			}
		}()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(grpcLis) }()
	attrs := []any{"grpc_addr", grpcLis.Addr().String(), "version", buildVersion(), "named_policies", len(named)}
	if adminLis != nil {
		attrs = append(attrs, "admin_addr", adminLis.Addr().String())
	}
	log.Info("serving", attrs...)

	select {
	case err := <-serveErr:
		shutdownAdmin(admin)
		return fmt.Errorf("grpc server: %w", err)
	case <-ctx.Done():
	}
	drain(log, cfg, srv, healthSrv, &draining)
	shutdownAdmin(admin)
	return nil
}

// transportOptions gives the gRPC listener TLS (mutual with --tls-client-ca) when configured,
// with the certificate reloaded on renewal until ctx ends. The admin listener stays plaintext:
// Prometheus and the kubelet's probes speak HTTP/1.1 without client certificates.
func transportOptions(ctx context.Context, cfg config, log *slog.Logger, reg prometheus.Registerer) ([]grpc.ServerOption, error) {
	if cfg.tls.Cert == "" {
		return nil, nil
	}
	r, err := certs.New(cfg.tls, log)
	if err != nil {
		return nil, err
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cors_extproc_tls_reloads_total",
		Help: "Changes of the TLS files, by whether they were applied (success) or refused (failure).",
	}, []string{"result"})
	if err := reg.Register(reloads); err != nil {
		return nil, err
	}
	success, failure := reloads.WithLabelValues("success"), reloads.WithLabelValues("failure")
	r.OnReload = func(err error) {
		if err != nil {
			failure.Inc()
			return
		}
		success.Inc()
	}
	go r.Run(ctx, cfg.tlsReloadInterval)
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(r.ServerConfig()))}, nil
}

// drain stops the server the way Envoy needs it: health turns NOT_SERVING at once so Envoy's
// health checks and Kubernetes readiness move new streams elsewhere; after the drain period the
// listener closes and GracefulStop lets streams in flight finish; whatever is still open at the
// grace deadline (counted from the signal) is cut by Stop.
func drain(log *slog.Logger, cfg config, srv *grpc.Server, healthSrv *health.Server, draining *atomic.Bool) {
	deadline := time.Now().Add(cfg.shutdownGrace)
	log.Info("draining", "drain_period", cfg.drainPeriod.String(), "shutdown_grace", cfg.shutdownGrace.String())
	draining.Store(true)
	healthSrv.Shutdown()
	time.Sleep(cfg.drainPeriod)

	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-stopped:
		log.Info("stopped: every stream finished")
	case <-timer.C:
		srv.Stop()
		<-stopped
		log.Warn("stopped at the grace deadline: open streams were cut")
	}
}

func shutdownAdmin(admin *http.Server) {
	if admin == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = admin.Shutdown(ctx)
}

// adminHandler serves /metrics, /healthz (the process is alive) and /readyz (it takes new
// streams; 503 once draining).
func adminHandler(reg *prometheus.Registry, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// loadPolicies reads the named-policy file. The server refuses to start on an invalid file and
// reports every error, each with its policy name and field; warnings are logged.
func loadPolicies(path string, limits policy.Limits, log *slog.Logger) (map[string]*policy.Policy, []byte, error) {
	if path == "" {
		return nil, nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--policies: %w", err)
	}
	named, warnings, err := limits.ParseNamed(data)
	for _, w := range warnings {
		log.Warn("policy warning", "file", path, "warning", w.String())
	}
	var invalid *policy.InvalidError
	if errors.As(err, &invalid) {
		lines := make([]string, len(invalid.Problems))
		for i, p := range invalid.Problems {
			lines[i] = "\n  " + p.Error()
		}
		return nil, nil, fmt.Errorf("--policies %s: invalid named-policy file:%s", path, strings.Join(lines, ""))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--policies %s: %w", path, err)
	}
	return named, data, nil
}
