package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
)

// config is the validated command line.
type config struct {
	addr        string
	concurrency int
	duration    time.Duration
	// mix is the share, in percent, of each request kind, in the order of kinds.
	mix [numKinds]int
}

// The kinds of HTTP request the generator plays.
const (
	kindActual    = iota // an actual request with an allowed Origin: two round trips
	kindNoOrigin         // an actual request without Origin: two round trips (Vary: Origin)
	kindPreflight        // a preflight, answered at once: one round trip
	numKinds
)

// routePolicy is the policy the generator's route carries in xds.route_metadata.
var routePolicy = map[string]any{
	"origins":         []string{"https://app.example.com", "https://admin.example.com"},
	"headers":         []string{"content-type"},
	"exposed_headers": []string{"x-total"},
	"credentials":     true,
	"max_age":         600,
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("cors-extproc-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "localhost:9002", "address of the ext_proc gRPC server")
	fs.IntVar(&c.concurrency, "concurrency", 64, "HTTP requests (streams) in flight at once")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to send requests")
	mix := fs.String("mix", "70,20,10", "percent of actual requests with Origin, actual requests without Origin, and preflights")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if c.addr == "" {
		errs = append(errs, errors.New("-addr: must not be empty"))
	}
	if c.concurrency < 1 {
		errs = append(errs, fmt.Errorf("-concurrency %d: must be at least 1", c.concurrency))
	}
	if c.duration <= 0 {
		errs = append(errs, fmt.Errorf("-duration %v: must be positive", c.duration))
	}
	if err := parseMix(*mix, &c.mix); err != nil {
		errs = append(errs, fmt.Errorf("-mix %q: %w", *mix, err))
	}
	return c, errors.Join(errs...)
}

func parseMix(s string, mix *[numKinds]int) error {
	parts := strings.Split(s, ",")
	if len(parts) != numKinds {
		return fmt.Errorf("want %d comma-separated percentages", numKinds)
	}
	sum := 0
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a percentage", p)
		}
		mix[i] = n
		sum += n
	}
	if sum != 100 {
		return fmt.Errorf("percentages add up to %d, not 100", sum)
	}
	return nil
}

// run is the whole program: main only adds the signal context and the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	msgs, err := buildMessages()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(cfg.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)

	// stop ends the run; requests in flight then finish under ctx, so that none is cut short
	// (a deadline on their streams would also be sent to the server as grpc-timeout).
	stop, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	// The request kinds in a cycle of 100 that follows the mix; each worker starts at its own place.
	cycle := make([]int, 0, 100)
	for kind, n := range cfg.mix {
		for range n {
			cycle = append(cycle, kind)
		}
	}
	var (
		done, failed atomic.Int64
		wg           sync.WaitGroup
		latencies    = make([][]time.Duration, cfg.concurrency)
		firstErr     atomic.Value
	)
	start := time.Now()
	for w := range cfg.concurrency {
		wg.Go(func() {
			for i := w * 37; stop.Err() == nil; i++ {
				t := time.Now()
				if err := exchange(ctx, client, &msgs[cycle[i%len(cycle)]]); err != nil {
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				latencies[w] = append(latencies[w], time.Since(t))
				done.Add(1)
			}
		})
	}
	progress(stop, stderr, start, &done, &failed)
	wg.Wait()
	elapsed := time.Since(start)

	all := slices.Concat(latencies...)
	slices.Sort(all)
	fmt.Fprintf(stdout, "requests:   %d in %v (%d failed)\n", len(all), elapsed.Round(time.Millisecond), failed.Load())
	fmt.Fprintf(stdout, "requests/s: %.0f\n", float64(len(all))/elapsed.Seconds())
	fmt.Fprintf(stdout, "latency:    p50 %v  p99 %v  p99.9 %v  max %v\n",
		percentile(all, 0.50), percentile(all, 0.99), percentile(all, 0.999), percentile(all, 1))
	if err, ok := firstErr.Load().(error); ok {
		return fmt.Errorf("%d requests failed, the first with: %w", failed.Load(), err)
	}
	return nil
}

// progress prints a line each second until ctx ends.
func progress(ctx context.Context, w io.Writer, start time.Time, done, failed *atomic.Int64) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			n := done.Load()
			fmt.Fprintf(w, "%5.0fs  %8d req/s  %10d done  %6d failed\n", now.Sub(start).Seconds(), n-last, n, failed.Load())
			last = n
		}
	}
}

// percentile returns the q-quantile of sorted (nearest rank); 0 for no samples.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// messages are what Envoy sends for one kind of request.
type messages struct {
	request, response *extprocv3.ProcessingRequest
}

// buildMessages builds, once, the Envoy-shaped messages of every kind (contract sections 2 and
// 3): pseudo-headers, lower-case keys, values in raw_value, and the route metadata as one-line
// text in the first message's attributes.
func buildMessages() ([numKinds]messages, error) {
	var out [numKinds]messages
	text, err := envoyfilter.MetadataText(envoyfilter.Metadata("cors", routePolicy), envoyfilter.OneLine)
	if err != nil {
		return out, err
	}
	attrs := map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
		envoyfilter.AttrRouteMetadata:       structpb.NewStringValue(text),
		envoyfilter.AttrVirtualHostMetadata: structpb.NewStringValue(""),
		envoyfilter.AttrRouteName:           structpb.NewStringValue("bench"),
	}}}
	common := [][2]string{{":path", "/api/items"}, {":scheme", "https"}, {":authority", "api.example.com"},
		{"user-agent", "cors-extproc-bench"}, {"accept", "application/json"}}
	response := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap([][2]string{{":status", "200"},
			{"content-type", "application/json"}, {"vary", "Accept-Encoding"}})}}}
	request := func(fields ...[2]string) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: headerMap(append(fields, common...)), EndOfStream: true}},
			Attributes: attrs,
		}
	}
	out[kindActual] = messages{request([2]string{":method", "GET"}, [2]string{"origin", "https://app.example.com"}), response}
	out[kindNoOrigin] = messages{request([2]string{":method", "GET"}), response}
	out[kindPreflight] = messages{request([2]string{":method", "OPTIONS"}, [2]string{"origin", "https://app.example.com"},
		[2]string{"access-control-request-method", "PUT"}), response}
	return out, nil
}

func headerMap(fields [][2]string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, f := range fields {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: f[0], RawValue: []byte(f[1])})
	}
	return m
}

// exchange plays one HTTP request as Envoy with allow_mode_override does: request_headers; then
// response_headers unless the reply answered the request or skipped the response phase; then a
// half-close, waiting for the server to end the stream.
func exchange(ctx context.Context, client extprocv3.ExternalProcessorClient, m *messages) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(m.request); err != nil {
		return err
	}
	reply, err := stream.Recv()
	if err != nil {
		return err
	}
	switch {
	case reply.GetImmediateResponse() != nil:
	case reply.GetRequestHeaders() == nil:
		return fmt.Errorf("request_headers answered with %T", reply.GetResponse())
	case reply.GetModeOverride().GetResponseHeaderMode() == extprocfilterv3.ProcessingMode_SKIP:
	default:
		if err := stream.Send(m.response); err != nil {
			return err
		}
		if reply, err = stream.Recv(); err != nil {
			return err
		}
		if reply.GetResponseHeaders() == nil {
			return fmt.Errorf("response_headers answered with %T", reply.GetResponse())
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("stream end: %v", err)
	}
	return nil
}
