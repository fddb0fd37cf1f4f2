package soak

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// Drain parameters: small enough for CI, with the drain period long enough to see requests
// served through it.
const (
	drainPeriod   = time.Second
	shutdownGrace = 5 * time.Second
	drainRate     = 2000
	// drainUpstreamDelay keeps each actual request's stream open a while, as a real upstream
	// does, so that a few dozen streams are open at the signal whatever its timing.
	drainUpstreamDelay = 10 * time.Millisecond
	// drainWorkers can offer drainRate with each request taking drainUpstreamDelay and more.
	drainWorkers = 64
	// loadBeforeSignal is how long the load runs before SIGTERM.
	loadBeforeSignal = 2 * time.Second
	// loadAfterExit keeps offering requests after the process has exited, so that refusals by
	// a server that is gone are seen and counted too.
	loadAfterExit = 200 * time.Millisecond
)

// TestDrainUnderLoad sends SIGTERM to the server in the middle of a steady load (cmd/cors-extproc
// run.go: health NOT_SERVING at once, requests still served for the drain period, then
// GracefulStop, and Stop at the grace deadline). Every request sent before the signal, or
// during the drain period, must complete with the right answer; requests sent once the server
// has stopped taking streams may be refused (Envoy's health checks have moved traffic away by
// then), and are counted apart. The health service must say NOT_SERVING at once, and the process
// must exit cleanly before the grace deadline, with no stream cut.
func TestDrainUnderLoad(t *testing.T) {
	requireSoak(t)
	svc := startService(t, drainPeriod, shutdownGrace)
	envoys := newEnvoys(t, svc, soakConns)
	health := healthpb.NewHealthClient(svc.dial(t))
	service := &healthpb.HealthCheckRequest{Service: extprocv3.ExternalProcessor_ServiceDesc.ServiceName}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st := checkHealth(ctx, health, service); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the signal: %v, want SERVING", st)
	}

	var (
		mu        sync.Mutex
		exchanges []exchange
	)
	stop, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		runLoad(envoys, loadConfig{rate: drainRate, workers: drainWorkers, upstreamDelay: drainUpstreamDelay}, stop, int(drainRate*time.Minute.Seconds()),
			func(x exchange) {
				mu.Lock()
				exchanges = append(exchanges, x)
				mu.Unlock()
			})
	}()
	time.Sleep(loadBeforeSignal)

	signalled := time.Now()
	if err := svc.Signal(); err != nil {
		t.Fatal(err)
	}
	var toNotServing time.Duration
	for {
		if checkHealth(ctx, health, service) == healthpb.HealthCheckResponse_NOT_SERVING {
			toNotServing = time.Since(signalled)
			break
		}
		if time.Since(signalled) > shutdownGrace {
			t.Fatalf("health still not NOT_SERVING %v after the signal", shutdownGrace)
		}
	}
	var toExit time.Duration
	select {
	case <-svc.Exited():
		toExit = time.Since(signalled)
	case <-time.After(shutdownGrace + 5*time.Second):
		t.Fatalf("cors-extproc still running %v after SIGTERM", shutdownGrace+5*time.Second)
	}
	time.Sleep(loadAfterExit)
	stopLoad()
	<-loadDone

	drainEnd := signalled.Add(drainPeriod)
	var inFlight, beforeOK, beforeFailed, duringOK, duringFailed, afterOK, refused, afterFailed int
	var failures []string
	fail := func(x exchange, when string) {
		if len(failures) < 5 {
			failures = append(failures, fmt.Sprintf("%s, sent %v after the signal, %s kind %d: %v",
				when, x.sent.Sub(signalled).Round(time.Millisecond), x.route, x.kind, x.err))
		}
	}
	for _, x := range exchanges {
		switch {
		case x.sent.Before(signalled):
			if x.end.After(signalled) {
				inFlight++
			}
			if x.err == nil {
				beforeOK++
			} else {
				beforeFailed++
				fail(x, "before the signal")
			}
		case x.sent.Before(drainEnd):
			if x.err == nil {
				duringOK++
			} else {
				duringFailed++
				fail(x, "during the drain period")
			}
		case x.err == nil:
			afterOK++
		case isRefused(x):
			refused++
		default:
			afterFailed++
			fail(x, "after the drain period")
		}
	}
	t.Logf(`
drain under load: SIGTERM after %v of %d HTTP requests/s (upstream answering in %v); --drain-period %v, --shutdown-grace %v
sent before the signal:           %6d (in flight at the signal: %d), completed %d, failed %d
sent during the drain period:     %6d, completed %d, failed %d
sent after the drain period:      %6d, completed %d, refused (server no longer taking streams) %d, failed %d
health NOT_SERVING after:         %v
process exited after:             %v (exit status: %v)`,
		loadBeforeSignal, drainRate, drainUpstreamDelay, drainPeriod, shutdownGrace,
		beforeOK+beforeFailed, inFlight, beforeOK, beforeFailed,
		duringOK+duringFailed, duringOK, duringFailed,
		afterOK+refused+afterFailed, afterOK, refused, afterFailed,
		toNotServing.Round(time.Microsecond), toExit.Round(time.Millisecond), svc.ExitErr())

	if n := beforeFailed + duringFailed + afterFailed; n > 0 {
		t.Errorf("%d requests failed in the drain (a refusal is only expected once the drain period is over):\n%v", n, failures)
	}
	if inFlight == 0 {
		t.Errorf("no request was in flight at the signal: the test proved nothing")
	}
	if toNotServing > 100*time.Millisecond {
		t.Errorf("health turned NOT_SERVING %v after the signal; it must at once", toNotServing)
	}
	if toExit >= shutdownGrace || toExit < drainPeriod {
		t.Errorf("the process exited %v after the signal; want between the drain period %v and the grace %v", toExit, drainPeriod, shutdownGrace)
	}
	if svc.ExitErr() != nil {
		t.Errorf("cors-extproc did not exit cleanly: %v\n%s", svc.ExitErr(), svc.Log())
	}
	if !svc.Logged(`"msg":"stopped: every stream finished"`) {
		t.Errorf("cors-extproc did not report that every stream finished:\n%s", svc.Log())
	}
}

// checkHealth asks the gRPC health service for the ext_proc service's status; an error (the
// listener closed, say) reads as UNKNOWN.
func checkHealth(ctx context.Context, health healthpb.HealthClient, req *healthpb.HealthCheckRequest) healthpb.HealthCheckResponse_ServingStatus {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := health.Check(ctx, req)
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}

// isRefused: the stream could not be opened or was refused before any reply (gRPC Unavailable),
// which is what a client sees from a server that has stopped taking streams. A request the
// server had started answering is never refused.
func isRefused(x exchange) bool {
	return !x.replied && errors.Is(x.err, envoytest.ErrStreamFailed) && status.Code(x.err) == codes.Unavailable
}
