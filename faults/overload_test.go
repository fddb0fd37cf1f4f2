package faults

import (
	"testing"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// Overload parameters: an offered rate far above what Envoy (one worker) and one replica
// serve together on 2 shared cores (a few thousand requests a second), with enough requests in
// flight that the backlog is Envoy's and the service's, not the load generator's.
const (
	overloadRate    = 20000
	overloadWorkers = 1024
	// memoryBound is the service's memory limit in deploy/k8s/base/deployment.yaml.
	memoryBound = 256.0 // MiB
	// envoyMemoryBound is far above an idle Envoy's 30-60 MiB; an Envoy that queued every
	// request of the overload would pass it.
	envoyMemoryBound = 512.0 // MiB
)

// TestOverload offers requests far above capacity, then a normal load. Logged: what became
// of the overload's requests (who shed them, and how), the resident memory of Envoy and the
// service before, at the peak and after. Asserted: nothing crashes, nothing is granted that the
// policy would not, memory stays bounded, and afterwards every request is decorated again.
func TestOverload(t *testing.T) {
	requireFaults(t)
	bin := servicetest.Build(t)
	envoy := realenvoy.Newest(t)
	svc, s, _ := startOne(t, bin, envoy)
	d := 10 * time.Second
	if short() {
		d = 5 * time.Second
	}

	idleEnvoy, idleService := rss(t, s.envoy.PID()), rss(t, svc.Cmd.Process.Pid)
	peakEnvoy, peakService := idleEnvoy, idleService
	sampled := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
				peakEnvoy, peakService = max(peakEnvoy, rss(t, s.envoy.PID())), max(peakService, rss(t, svc.Cmd.Process.Pid))
			}
		}
	}()
	start := time.Now()
	over := s.run(t.Context(), overloadRate, d, loadMix, overloadWorkers)
	elapsed := time.Since(start)
	close(done)
	<-sampled
	stats := s.extProcStats(t)

	select {
	case <-svc.Exited():
		t.Fatalf("cors-extproc exited under overload: %v\n%s", svc.ExitErr(), svc.Log())
	default:
	}
	s.waitOK(t, newClient())
	after := s.run(t.Context(), loadRate(), 3*time.Second, loadMix, loadWorkers)
	afterEnvoy, afterService := rss(t, s.envoy.PID()), rss(t, svc.Cmd.Process.Pid)

	c := count(over)
	t.Logf(`
overload: Envoy %s (1 worker), one replica; %d HTTP requests/s offered for %v, at most %d in flight
answered:        %d requests in %v (%.0f/s)
outcomes:        %s
slowest answer:  %v
Envoy ext_proc:  %s
resident memory (MiB)   idle   peak  after
Envoy                 %6.1f %6.1f %6.1f
cors-extproc          %6.1f %6.1f %6.1f
then %d HTTP requests/s for 3s: %s`,
		envoy.Version, overloadRate, d, overloadWorkers, len(over), elapsed.Round(time.Millisecond), float64(len(over))/elapsed.Seconds(),
		c, maxLatency(over).Round(time.Millisecond), stats,
		idleEnvoy, peakEnvoy, afterEnvoy, idleService, peakService, afterService, loadRate(), count(after))

	if c[wrong] > 0 {
		t.Errorf("overload granted what the policy would not:\n%s", wrongOnes(over, wrong))
	}
	if peakService > memoryBound || peakEnvoy > envoyMemoryBound {
		t.Errorf("resident memory peaked at %.1f MiB (service, bound %.0f) and %.1f MiB (Envoy, bound %.0f)", peakService, memoryBound, peakEnvoy, envoyMemoryBound)
	}
	if ca := count(after); ca[ok] != len(after) {
		t.Errorf("after the overload, every request must be decorated again: %s\n%s", ca, wrongOnes(after, open, closed, failed, wrong))
	}
	if svc.Logged(`"level":"ERROR"`) {
		t.Errorf("cors-extproc logged errors under overload:\n%s", svc.Log())
	}
}
