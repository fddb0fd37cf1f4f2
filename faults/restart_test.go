package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// loadRate is the steady rate of the restart, rolling and slow-service scenarios, in HTTP
// requests per second: well within what one replica serves on 2 shared cores, so that every
// failure is the fault's, not the machine's.
func loadRate() int {
	if short() {
		return 100
	}
	return 200
}

// loadWorkers bounds the requests in flight of a steady load.
const loadWorkers = 64

// TestRestart kills the only replica (SIGKILL, a crash: no drain) under a steady load and
// starts it again on the same address, Envoy left running. Requests in flight at the kill, and
// every request while it is gone, get the fail-open answer at once; once it is back, requests
// are decorated again. Logged: the
// recovery time from the new process's "serving" line to the first decorated answer, and the
// last undecorated one.
func TestRestart(t *testing.T) {
	requireFaults(t)
	bin := servicetest.Build(t)
	envoy := realenvoy.Newest(t)
	svc, s, addr := startOne(t, bin, envoy)

	stop := s.background(loadRate(), loadMix, loadWorkers)
	time.Sleep(phase(2 * time.Second))
	killed := time.Now()
	if err := svc.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-svc.Exited()
	time.Sleep(phase(2 * time.Second))
	startReplica(t, bin, addr)
	back := time.Now()
	time.Sleep(phase(3 * time.Second))
	rs := stop()

	var before, inFlight []result
	for _, r := range between(rs, time.Time{}, killed) {
		if r.sent.Add(r.latency).Before(killed) {
			before = append(before, r)
		} else {
			inFlight = append(inFlight, r)
		}
	}
	gone, after := between(rs, killed, back), between(rs, back, time.Now())
	firstOK, recovered := firstOKAfter(rs, back)
	lastBad, _ := lastNotOK(rs)
	t.Logf(`
restart: Envoy %s, %d HTTP requests/s offered (%d sent), the only replica SIGKILLed, started again %v later
done before the kill:   %s
in flight at the kill:  %s
replica gone:           %s
after "serving":        %s
first decorated answer: %v after "serving" (the last undecorated request was sent %v after it)
slowest answer:         %v
Envoy ext_proc:         %s`,
		envoy.Version, loadRate(), len(rs), phase(2*time.Second), count(before), count(inFlight), count(gone), count(after),
		firstOK.Sub(back).Round(time.Millisecond), lastBad.Sub(back).Round(time.Millisecond),
		maxLatency(rs).Round(time.Millisecond), s.extProcStats(t))

	if c := count(rs); c[wrong]+c[failed]+c[closed] > 0 {
		t.Errorf("want only decorated and fail-open answers, got %s:\n%s", c, wrongOnes(rs, wrong, failed, closed))
	}
	if c := count(before); c[ok] != len(before) {
		t.Errorf("before the kill: %s", c)
	}
	if !recovered {
		t.Fatal("no request was decorated after the replica came back")
	}
	if late := between(rs, firstOK, time.Now()); count(late)[ok] < len(late)-noiseBound(len(late)) {
		t.Errorf("once decorated again, requests must stay so: %s\n%s", count(late), wrongOnes(late, open))
	}
	if m := maxLatency(rs); m > hangBound {
		t.Errorf("a request took %v, past %v (both phases' message timeouts and slack)", m, hangBound)
	}
}

// TestRollingRestart rolls two replicas under a steady load as the Deployment does (its flags:
// --shutdown-grace 15s and the default --drain-period; the cluster's health checks as
// deploy/envoy.yaml ships them): SIGTERM to one, a new one started in its place once it has
// exited, then the same for the other. Not one HTTP request may fail, and not one ext_proc
// stream (Envoy's streams_failed: fail-open would hide a stream refused by a closed listener as
// an undecorated 200); the only undecorated answers allowed are replies later than
// message_timeout on a busy machine, counted by Envoy, at most 1%.
func TestRollingRestart(t *testing.T) {
	requireFaults(t)
	bin := servicetest.Build(t)
	envoy := realenvoy.Newest(t)
	addrs := []string{freeAddr(t), freeAddr(t)}
	replicas := []*servicetest.Service{startReplica(t, bin, addrs[0]), startReplica(t, bin, addrs[1])}
	s := newStack(t, envoy, addrs, nil)
	for _, a := range addrs {
		s.waitHealthy(t, a)
	}

	start := time.Now()
	failed0, timeouts0 := s.extProc(t, "streams_failed"), s.extProc(t, "message_timeouts")
	stop := s.background(loadRate(), loadMix, loadWorkers)
	time.Sleep(phase(2 * time.Second))
	var steps []string
	for i, a := range addrs {
		t0 := time.Now()
		if err := replicas[i].Signal(); err != nil {
			t.Fatal(err)
		}
		unhealthy := s.waitUnhealthy(t, a).Sub(t0)
		<-replicas[i].Exited()
		exited := time.Since(t0)
		startReplica(t, bin, a)
		s.waitHealthy(t, a)
		steps = append(steps, fmt.Sprintf("replica %s: out of Envoy's rotation %v after SIGTERM, exited after %v, replacement healthy in Envoy %v later",
			a, unhealthy.Round(time.Millisecond), exited.Round(time.Millisecond), (time.Since(t0)-exited).Round(time.Millisecond)))
	}
	time.Sleep(phase(2 * time.Second))
	rs := stop()
	elapsed := time.Since(start)
	c := count(rs)
	streamsFailed, timeouts := s.extProc(t, "streams_failed")-failed0, s.extProc(t, "message_timeouts")-timeouts0
	t.Logf(`
rolling restart: Envoy %s, %d HTTP requests/s offered for %v: %d requests (%.0f/s)
%s
%s
outcomes:       %s
slowest answer: %v
Envoy ext_proc: %s`,
		envoy.Version, loadRate(), elapsed.Round(time.Second), len(rs), float64(len(rs))/elapsed.Seconds(),
		steps[0], steps[1], c, maxLatency(rs).Round(time.Millisecond), s.extProcStats(t))
	// A stream the roll cuts or refuses is a failed stream in Envoy's count; a reply later than
	// message_timeout on a busy machine is not the roll's doing.
	if c[ok]+c[open] != len(rs) || streamsFailed > 0 || c[open] > timeouts || c[open] > noiseBound(len(rs)) {
		t.Errorf("%d of %d requests did not get the policy's answer (%d ext_proc streams failed, %d replies timed out):\n%s",
			len(rs)-c[ok], len(rs), streamsFailed, timeouts, wrongOnes(rs, open, closed, failed, wrong))
	}
	if len(rs) < loadRate()*10 {
		// Two drain periods (5 s each) at least.
		t.Errorf("only %d requests: the load did not span the roll", len(rs))
	}
}
