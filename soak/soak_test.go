package soak

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Soak parameters. The defaults make `make soak` a run of a few minutes; CI sets
// SOAK_DURATION=30s.
const (
	defaultSoakDuration = 3 * time.Minute
	// defaultSoakRate is well below what the server takes on 2 shared cores (BENCHMARKS.md), so
	// that latency measures the server, not a saturated machine.
	defaultSoakRate = 2000
	soakWorkers     = 32
	soakConns       = 4
	// soakSlices cuts the run into time slices, each with its p99 and a memory sample; the
	// first is the warm-up.
	soakSlices = 10

	// maxSliceP99 is far below Envoy's 200 ms per-message timeout, and far above a healthy
	// server's p99 on loopback (about a millisecond): a slice above it is a stall.
	maxSliceP99 = 100 * time.Millisecond
	// maxRSSGrowth bounds the resident memory at the end against its value after the warm-up.
	maxRSSGrowth = 1.5
	// goroutineSlack is how far above the idle count the server's goroutines may be once the
	// load has stopped (a connection's transient writer, say).
	goroutineSlack = 3
)

// sample is the server's state at one point of the run.
type sample struct {
	rss        uint64
	goroutines int
}

// TestSoak offers a steady load for SOAK_DURATION and checks that nothing grows and nothing
// slows down: no error or wrong answer, every time slice's p99 far below Envoy's timeout,
// resident memory at the end within maxRSSGrowth of its value after the warm-up, and the
// goroutine count back to its idle value once the load stops.
func TestSoak(t *testing.T) {
	requireSoak(t)
	duration := envDuration(t, "SOAK_DURATION", defaultSoakDuration)
	rate := envFloat(t, "SOAK_RATE", defaultSoakRate)
	ctx, cancel := context.WithTimeout(context.Background(), duration+2*time.Minute)
	defer cancel()

	svc := startService(t, 0, 5*time.Second)
	envoys := newEnvoys(t, svc, soakConns)
	// A few requests open every connection and fill the policy caches; then the idle state.
	runLoad(envoys, loadConfig{rate: 1000, workers: soakWorkers}, ctx, 200, func(exchange) {})
	idle := takeSample(ctx, t, svc)

	sliceLen := duration / soakSlices
	var (
		mu        sync.Mutex
		latencies [soakSlices][]time.Duration
		errs      [soakSlices]int
		firstErrs []string
	)
	start := time.Now()
	record := func(x exchange) {
		i := min(max(int(x.due.Sub(start)/sliceLen), 0), soakSlices-1)
		mu.Lock()
		defer mu.Unlock()
		latencies[i] = append(latencies[i], x.end.Sub(x.due))
		if x.err != nil {
			errs[i]++
			if len(firstErrs) < 5 {
				firstErrs = append(firstErrs, fmt.Sprintf("%s kind %d: %v", x.route, x.kind, x.err))
			}
		}
	}
	stop, stopLoad := context.WithDeadline(ctx, start.Add(duration))
	defer stopLoad()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		// The limit only bounds a run whose clock misbehaves: twice the offered requests.
		runLoad(envoys, loadConfig{rate: rate, workers: soakWorkers}, stop, int(2*rate*duration.Seconds()), record)
	}()
	samples := make([]sample, 0, soakSlices)
	for i := 1; i <= soakSlices; i++ {
		select {
		case <-time.After(time.Until(start.Add(time.Duration(i) * sliceLen))):
		case <-ctx.Done():
			t.Fatal("the soak outlived its deadline")
		}
		samples = append(samples, takeSample(ctx, t, svc))
	}
	<-loadDone
	elapsed := time.Since(start)

	// Once the load stops, the streams' goroutines must go; give the server a moment.
	var after sample
	settle := time.Now()
	for {
		after = takeSample(ctx, t, svc)
		if after.goroutines <= idle.goroutines+goroutineSlack || time.Since(settle) > 10*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	warm, middle, end := samples[0], samples[soakSlices/2-1], samples[soakSlices-1]
	var (
		table             strings.Builder
		total, totalErrs  int
		all               []time.Duration
		worstP99          time.Duration
		maxLoadGoroutines int
	)
	fmt.Fprintf(&table, "soak: %v at %.0f HTTP requests/s offered (70%% actual with an allowed Origin, 20%% without Origin, 10%% preflights),\n", duration, rate)
	fmt.Fprintf(&table, "%d workers, %d gRPC connections, %d routes (route metadata, ref, x-cors-policy, Envoy Gateway annotation, virtual host)\n\n", soakWorkers, soakConns, len(routes))
	fmt.Fprintf(&table, "%-5s %-12s %9s %8s %9s %9s %9s %7s %8s %10s\n", "slice", "time", "requests", "req/s", "p50", "p99", "max", "errors", "RSS MiB", "goroutines")
	for i := range soakSlices {
		l := latencies[i]
		slices.Sort(l)
		p99 := percentile(l, 99)
		worstP99 = max(worstP99, p99)
		maxLoadGoroutines = max(maxLoadGoroutines, samples[i].goroutines)
		total += len(l)
		totalErrs += errs[i]
		all = append(all, l...)
		fmt.Fprintf(&table, "%-5d %-12s %9d %8.0f %9s %9s %9s %7d %8.1f %10d\n", i+1,
			fmt.Sprintf("%v-%v", (time.Duration(i)*sliceLen).Round(time.Second), (time.Duration(i+1)*sliceLen).Round(time.Second)),
			len(l), float64(len(l))/sliceLen.Seconds(), round(percentile(l, 50)), round(p99), round(percentile(l, 100)),
			errs[i], mib(samples[i].rss), samples[i].goroutines)
	}
	slices.Sort(all)
	fmt.Fprintf(&table, "\n%-34s %8s %10s\n", "", "RSS MiB", "goroutines")
	for _, row := range []struct {
		name string
		s    sample
	}{{"idle, before the load", idle}, {"start (after the warm-up slice)", warm}, {"middle", middle}, {"end", end},
		{"after the load stopped", after}} {
		fmt.Fprintf(&table, "%-34s %8.1f %10d\n", row.name, mib(row.s.rss), row.s.goroutines)
	}
	fmt.Fprintf(&table, "\ntotal: %d requests in %v (%.0f/s), %d errors; p50 %v, p99 %v, p99.9 %v, max %v\n",
		total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), totalErrs,
		round(percentile(all, 50)), round(percentile(all, 99)), round(percentile(all, 99.9)), round(percentile(all, 100)))
	t.Log("\n" + table.String())

	if totalErrs > 0 {
		t.Errorf("%d requests failed or got a wrong answer; first ones:\n%s", totalErrs, strings.Join(firstErrs, "\n"))
	}
	if worstP99 > maxSliceP99 {
		t.Errorf("a time slice's p99 is %v, above %v", worstP99, maxSliceP99)
	}
	if want := 0.8 * rate * duration.Seconds(); float64(total) < want {
		t.Errorf("%d requests played, fewer than 80%% of the %.0f offered: the load generator could not keep up", total, want/0.8)
	}
	if float64(end.rss) > maxRSSGrowth*float64(warm.rss) {
		t.Errorf("resident memory grew from %.1f MiB after the warm-up to %.1f MiB at the end (more than %.0f%%)",
			mib(warm.rss), mib(end.rss), (maxRSSGrowth-1)*100)
	}
	if maxLoadGoroutines > idle.goroutines+2*soakWorkers+goroutineSlack {
		t.Errorf("%d goroutines under load with %d requests in flight at most, %d when idle", maxLoadGoroutines, soakWorkers, idle.goroutines)
	}
	if after.goroutines > idle.goroutines+goroutineSlack {
		t.Errorf("%d goroutines 10s after the load stopped, %d before it started", after.goroutines, idle.goroutines)
	}

	if err := svc.Signal(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-svc.Exited():
		if svc.ExitErr() != nil {
			t.Errorf("cors-extproc did not stop cleanly on SIGTERM: %v\n%s", svc.ExitErr(), svc.Log())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("cors-extproc still running 10s after SIGTERM")
	}
}

func takeSample(ctx context.Context, t *testing.T, svc *service) sample {
	t.Helper()
	rss, err := svc.rss()
	if err != nil {
		t.Fatalf("reading the server's resident memory: %v", err)
	}
	g, err := svc.goroutines(ctx)
	if err != nil {
		t.Fatalf("reading the server's goroutines: %v", err)
	}
	return sample{rss: rss, goroutines: g}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// round keeps latencies readable in the table: microseconds below a millisecond, else 0.1 ms.
func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}
