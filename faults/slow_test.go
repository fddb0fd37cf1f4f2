package faults

import (
	"testing"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// stallFor is how long a replica stays frozen: several message timeouts, and long enough for
// Envoy's health checks (timeout 1s, two failures) to take a stalled replica out.
const stallFor = 8 * time.Second

// TestSlowService freezes replicas (SIGSTOP: connections are still accepted, into the kernel's
// backlog, and nothing answers, past every message timeout) under a steady load.
//
// The only replica: while it is frozen each request waits at most message_timeout per phase
// and gets the fail-open answer; once it resumes (SIGCONT), requests are decorated again.
//
// One of two replicas: Envoy's health checks take it out of rotation; until then requests it
// gets fail open after message_timeout, afterwards every request is decorated by the other.
// Once it resumes, it is back in rotation and nothing is lost.
func TestSlowService(t *testing.T) {
	requireFaults(t)
	bin := servicetest.Build(t)
	envoy := realenvoy.Newest(t)

	t.Run("only replica", func(t *testing.T) {
		svc, s, _ := startOne(t, bin, envoy)
		stop := s.background(loadRate(), loadMix, loadWorkers)
		time.Sleep(phase(2 * time.Second))
		frozen := time.Now()
		resume := stall(t, svc)
		time.Sleep(phase(stallFor))
		resume()
		resumed := time.Now()
		time.Sleep(phase(3 * time.Second))
		rs := stop()

		firstOK, recovered := firstOKAfter(rs, resumed)
		lastBad, _ := lastNotOK(rs)
		t.Logf(`
slow service, the only replica frozen for %v: Envoy %s, %d HTTP requests/s offered (%d sent)
before:                 %s
frozen:                 %s
after SIGCONT:          %s
first decorated answer: %v after SIGCONT (the last undecorated request was sent %v after it)
slowest answer:         %v
Envoy ext_proc:         %s`,
			phase(stallFor), envoy.Version, loadRate(), len(rs), count(between(rs, time.Time{}, frozen)),
			count(between(rs, frozen, resumed)), count(between(rs, resumed, time.Now())),
			firstOK.Sub(resumed).Round(time.Millisecond), lastBad.Sub(resumed).Round(time.Millisecond),
			maxLatency(rs).Round(time.Millisecond), s.extProcStats(t))

		if c := count(rs); c[wrong]+c[failed]+c[closed] > 0 {
			t.Errorf("want only decorated and fail-open answers, got %s:\n%s", c, wrongOnes(rs, wrong, failed, closed))
		}
		if c := count(between(rs, frozen.Add(hangBound), resumed)); c[open] == 0 {
			t.Errorf("while frozen: %s; the replica was not frozen", c)
		}
		if !recovered {
			t.Fatal("no request was decorated after the replica resumed")
		}
		if late := between(rs, firstOK.Add(hangBound), time.Now()); count(late)[ok] < len(late)-noiseBound(len(late)) {
			t.Errorf("once decorated again, requests must stay so: %s\n%s", count(late), wrongOnes(late, open))
		}
		if m := maxLatency(rs); m > hangBound {
			t.Errorf("a request took %v, past %v (both phases' message timeouts and slack)", m, hangBound)
		}
	})

	t.Run("one of two replicas", func(t *testing.T) {
		addrs := []string{freeAddr(t), freeAddr(t)}
		startReplica(t, bin, addrs[0])
		frozenReplica := startReplica(t, bin, addrs[1])
		s := newStack(t, envoy, addrs, nil)
		for _, a := range addrs {
			s.waitHealthy(t, a)
		}
		stop := s.background(loadRate(), loadMix, loadWorkers)
		time.Sleep(phase(2 * time.Second))
		frozen := time.Now()
		resume := stall(t, frozenReplica)
		out := s.waitUnhealthy(t, addrs[1])
		time.Sleep(stallFor - time.Since(frozen))
		resume()
		resumed := time.Now()
		s.waitHealthy(t, addrs[1])
		back := time.Now()
		time.Sleep(phase(2 * time.Second))
		rs := stop()

		undetected := between(rs, frozen, out)
		t.Logf(`
slow service, one of two replicas frozen for %v: Envoy %s, %d HTTP requests/s offered (%d sent)
before:                         %s
frozen, still in rotation:      %s (Envoy's health checks took it out %v after the freeze)
frozen, out of rotation:        %s
resumed (back in rotation %v after SIGCONT): %s
slowest answer:                 %v
Envoy ext_proc:                 %s`,
			stallFor, envoy.Version, loadRate(), len(rs), count(between(rs, time.Time{}, frozen)),
			count(undetected), out.Sub(frozen).Round(time.Millisecond),
			count(between(rs, out, resumed)), back.Sub(resumed).Round(time.Millisecond), count(between(rs, resumed, time.Now())),
			maxLatency(rs).Round(time.Millisecond), s.extProcStats(t))

		if c := count(rs); c[wrong]+c[failed]+c[closed] > 0 {
			t.Errorf("want only decorated and fail-open answers, got %s:\n%s", c, wrongOnes(rs, wrong, failed, closed))
		}
		// A request sent just before Envoy took the replica out may still be waiting on it.
		if settled := between(rs, out.Add(hangBound), time.Now()); count(settled)[ok] < len(settled)-noiseBound(len(settled)) {
			t.Errorf("once Envoy took the frozen replica out, every request must be decorated: %s\n%s", count(settled), wrongOnes(settled, open))
		}
		if m := maxLatency(rs); m > hangBound {
			t.Errorf("a request took %v, past %v (both phases' message timeouts and slack)", m, hangBound)
		}
	})
}
