package processor

// Benchmarks of the whole exchange (issue #6). BenchmarkExchange puts the processor and a no-op
// ext_proc server behind the same gRPC options on loopback TCP and drives both with the same
// lean client, so that every figure comes with its baseline from the same run. BENCHMARKS.md
// has the method and the results.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// A server-side lever, the same for both servers of BenchmarkExchange, so that it is measured
// by running the suite with and without it: go test -bench Exchange -args -bench.workers=4
var benchWorkers = flag.Uint("bench.workers", 0, "grpc.NumStreamWorkers of the servers in BenchmarkExchange; 0 for a goroutine per stream")

// benchServerOptions are cmd/cors-extproc's gRPC options (default flags) plus the levers.
func benchServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.MaxConcurrentStreams(1000)}
	if *benchWorkers > 0 {
		opts = append(opts, grpc.NumStreamWorkers(uint32(*benchWorkers)))
	}
	return opts
}

// The policy of the benchmark routes: a typical API route (three origins, credentials, a
// max-age, request and exposed headers). The skip shape's route adds allow_origin_absent: false.
var benchPolicyFields = map[string]any{
	"origins":         []string{"https://app.example.com", "https://admin.example.com", "https://*.partner.example"},
	"headers":         []string{"content-type", "x-requested-with"},
	"exposed_headers": []string{"x-total"},
	"credentials":     true,
	"max_age":         600,
}

// benchShape is one kind of HTTP request, as the pre-encoded messages Envoy would send.
type benchShape struct {
	name string
	// request is request_headers with the route's attributes; response is response_headers.
	request, response rawMessage
	// oursRounds is how many round trips the processor needs in two-phase mode, oneTripRounds
	// in one-trip mode; the baseline always needs two.
	oursRounds, oneTripRounds int
	// oursReply is the reply kind the processor gives to request_headers.
	oursReply protowire.Number
}

// Field numbers of ProcessingResponse and ProcessingMode that the bench client reads.
const (
	replyRequestHeaders    protowire.Number = 1
	replyResponseHeaders   protowire.Number = 2
	replyImmediate         protowire.Number = 7
	replyModeOverride      protowire.Number = 9
	modeResponseHeaderMode protowire.Number = 2
	headerSendModeSkip                      = 2
)

// benchShapes builds the three shapes once; the client reuses their bytes for every exchange.
func benchShapes(tb testing.TB) []benchShape {
	tb.Helper()
	skipFields := map[string]any{"allow_origin_absent": false}
	for k, v := range benchPolicyFields {
		skipFields[k] = v
	}
	common := [][2]string{{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"},
		{"accept", "application/json"}, {"accept-encoding", "gzip, deflate, br"},
		{"x-forwarded-proto", "https"}, {"x-request-id", "4f0c6a1e-53c4-4d2b-9a57-0c8e6c1b2f3a"}}
	withOrigin := append([][2]string{{"origin", "https://app.example.com"}}, common...)
	response := responseHeadersMessage(tb, [][2]string{{":status", "200"}, {"content-type", "application/json"},
		{"content-length", "512"}, {"vary", "Accept-Encoding"}, {"cache-control", "no-store"}})
	return []benchShape{
		{name: "preflight", oursRounds: 1, oneTripRounds: 1, oursReply: replyImmediate, response: response,
			request: requestHeadersMessage(tb, "OPTIONS", benchPolicyFields, append(slices.Clone(withOrigin),
				[2]string{"access-control-request-method", "PUT"}, [2]string{"access-control-request-headers", "content-type"}))},
		{name: "actual", oursRounds: 2, oneTripRounds: 1, oursReply: replyRequestHeaders, response: response,
			request: requestHeadersMessage(tb, "GET", benchPolicyFields, withOrigin)},
		{name: "skip", oursRounds: 1, oneTripRounds: 1, oursReply: replyRequestHeaders, response: response,
			request: requestHeadersMessage(tb, "GET", skipFields, common)},
	}
}

// requestHeadersMessage encodes a request_headers message as Envoy sends it (contract sections
// 2 and 3): pseudo-headers first, lower-case keys, values in raw_value, and the route metadata
// as one-line text among the request attributes.
func requestHeadersMessage(tb testing.TB, method string, policyFields map[string]any, headers [][2]string) rawMessage {
	tb.Helper()
	text, err := envoyfilter.MetadataText(envoyfilter.Metadata("cors", policyFields), envoyfilter.OneLine)
	if err != nil {
		tb.Fatal(err)
	}
	fields := append([][2]string{{":method", method}, {":path", "/api/v1/items?page=2"},
		{":scheme", "https"}, {":authority", "api.example.com"}}, headers...)
	return encode(tb, &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: headerMap(fields), EndOfStream: true}},
		Attributes: map[string]*structpb.Struct{attributesKey: {Fields: map[string]*structpb.Value{
			attrRouteMetadata:   structpb.NewStringValue(text),
			attrVirtualHostMeta: structpb.NewStringValue(""),
			attrRouteName:       structpb.NewStringValue("api"),
		}}},
	})
}

func responseHeadersMessage(tb testing.TB, headers [][2]string) rawMessage {
	tb.Helper()
	return encode(tb, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(headers)}}})
}

func headerMap(fields [][2]string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, f := range fields {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: f[0], RawValue: []byte(f[1])})
	}
	return m
}

func encode(tb testing.TB, m proto.Message) rawMessage {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// rawMessage is an encoded ProcessingRequest that the bench client sends as it is.
type rawMessage []byte

// replyInfo is what the bench client reads from a reply: its kind and whether it skips the
// response phase. Nothing else is decoded, so that the client costs as little as it can.
type replyInfo struct {
	kind protowire.Number
	skip bool
}

// rawCodec is the bench client's codec: requests go out pre-encoded, replies are only scanned.
// It keeps the content-subtype "proto", so the servers see an ordinary client.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	// The bytes are shared by every stream; gRPC only reads them.
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawMessage))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	info := v.(*replyInfo)
	*info = replyInfo{}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		b = data.Materialize()
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num >= replyRequestHeaders && num <= replyImmediate:
			info.kind = num
		case num == replyModeOverride:
			info.skip = skipsResponseHeaders(v)
		}
	}
	return nil
}

// skipsResponseHeaders reports whether an encoded ProcessingMode sets response_header_mode SKIP.
func skipsResponseHeaders(b []byte) bool {
	skip := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == modeResponseHeaderMode && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(b)
			skip = v == headerSendModeSkip
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return false
		}
		b = b[n:]
	}
	return skip
}

var processDesc = &extprocv3.ExternalProcessor_ServiceDesc.Streams[0]

const processMethod = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"

// exchange plays one HTTP request the way Envoy with allow_mode_override does: request_headers;
// then response_headers unless the reply answered the request or skipped the response phase;
// then a half-close, waiting for the server to end the stream. It returns the round trips.
func exchange(ctx context.Context, conn *grpc.ClientConn, shape *benchShape) (rounds int, first replyInfo, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := conn.NewStream(ctx, processDesc, processMethod, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return 0, first, err
	}
	if err := cs.SendMsg(&shape.request); err != nil {
		return 0, first, err
	}
	if err := cs.RecvMsg(&first); err != nil {
		return 0, first, err
	}
	rounds = 1
	if first.kind == replyRequestHeaders && !first.skip {
		if err := cs.SendMsg(&shape.response); err != nil {
			return rounds, first, err
		}
		var second replyInfo
		if err := cs.RecvMsg(&second); err != nil {
			return rounds, first, err
		}
		if second.kind != replyResponseHeaders {
			return rounds, first, fmt.Errorf("response_headers answered with field %d", second.kind)
		}
		rounds = 2
	}
	if err := cs.CloseSend(); err != nil {
		return rounds, first, err
	}
	var end replyInfo
	if err := cs.RecvMsg(&end); !errors.Is(err, io.EOF) {
		return rounds, first, fmt.Errorf("stream end: %v", err)
	}
	return rounds, first, nil
}

// noopServer is the baseline: the least an ext_proc server can do. It answers every event with
// an empty CONTINUE of the matching kind and never skips, so an HTTP request always costs it two
// round trips. Its replies are shared, never built per event: it is the floor of the exchange.
type noopServer struct {
	extprocv3.UnimplementedExternalProcessorServer
}

var (
	noopRequestHeaders = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	noopResponseHeaders = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
)

func (noopServer) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || stream.Context().Err() != nil {
				return nil
			}
			return err
		}
		resp := noopRequestHeaders
		if req.GetResponseHeaders() != nil {
			resp = noopResponseHeaders
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// serveTCP serves srv on a loopback TCP port and returns a client connection to it.
func serveTCP(tb testing.TB, srv extprocv3.ExternalProcessorServer, opts ...grpc.ServerOption) *grpc.ClientConn {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	extprocv3.RegisterExternalProcessorServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = conn.Close()
		s.Stop()
	})
	return conn
}

// cpuTime is the process's user+system CPU time: client and server together, as they share
// the process (and the machine's cores).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// baselineRuns keeps, per shape and stream count, the baseline's ns/exchange of this process,
// so that the ours run right after it reports its ratio to the median of them. Only the runs
// with the largest b.N count: the smaller ones are the framework's probes.
var baselineRuns = map[string]*benchRuns{}

type benchRuns struct {
	n     int
	nsPer []float64
}

func (r *benchRuns) add(n int, nsPer float64) {
	switch {
	case n > r.n:
		r.n, r.nsPer = n, []float64{nsPer}
	case n == r.n:
		r.nsPer = append(r.nsPer, nsPer)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkExchange measures one HTTP request's ext_proc exchange (stream open, its round
// trips, stream end) at 1, 64 and 512 concurrent streams on one connection, as Envoy
// multiplexes them, for each request shape, against the processor and the no-op baseline.
// Client and server share the process and its cores: ns/exchange and cpu-ns/exchange include
// the client's share, which is the same per round trip for both servers.
//
// "ours" is the server in two-phase mode as cmd runs it (the response headers also returned as
// metadata, for Envoy's header filters), "ours-one-trip" in one-trip mode (docs/envoy-extproc.md
// section 7).
func BenchmarkExchange(b *testing.B) {
	newServer := func(mode Mode) *Server {
		srv, err := New(Options{Mode: mode, HeadersNamespace: "cors-extproc"})
		if err != nil {
			b.Fatal(err)
		}
		return srv
	}
	servers := []struct {
		name string
		conn *grpc.ClientConn
	}{
		// The baseline runs first so that ours can report its ratio to it.
		{"baseline", serveTCP(b, noopServer{}, benchServerOptions()...)},
		{"ours", serveTCP(b, newServer(ModeTwoPhase), benchServerOptions()...)},
		{"ours-one-trip", serveTCP(b, newServer(ModeOneTrip), benchServerOptions()...)},
	}
	for _, shape := range benchShapes(b) {
		for _, streams := range []int{1, 64, 512} {
			key := fmt.Sprintf("%s/streams=%d", shape.name, streams)
			for _, server := range servers {
				b.Run(key+"/"+server.name, func(b *testing.B) {
					wantRounds, wantReply := 2, replyRequestHeaders
					switch server.name {
					case "ours":
						wantRounds, wantReply = shape.oursRounds, shape.oursReply
					case "ours-one-trip":
						wantRounds, wantReply = shape.oneTripRounds, shape.oursReply
					}
					// Warm up: the connection, the policy cache, the server's buffers.
					for range 10 {
						if _, _, err := exchange(context.Background(), server.conn, &shape); err != nil {
							b.Fatal(err)
						}
					}
					var before, after runtimeStats
					before.read()
					b.ResetTimer()
					var (
						next atomic.Int64
						wg   sync.WaitGroup
					)
					for range streams {
						wg.Go(func() {
							for next.Add(1) <= int64(b.N) {
								rounds, first, err := exchange(context.Background(), server.conn, &shape)
								if err == nil && (rounds != wantRounds || first.kind != wantReply) {
									err = fmt.Errorf("%d round trips, first reply field %d; want %d, %d", rounds, first.kind, wantRounds, wantReply)
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
					b.StopTimer()
					after.read()
					n := float64(b.N)
					nsPer := float64(b.Elapsed().Nanoseconds()) / n
					b.ReportMetric(nsPer, "ns/exchange")
					b.ReportMetric(float64(after.cpu-before.cpu)/n, "cpu-ns/exchange")
					b.ReportMetric(float64(after.mallocs-before.mallocs)/n, "allocs/exchange")
					b.ReportMetric(float64(wantRounds), "round-trips/exchange")
					if server.name == "baseline" {
						if baselineRuns[key] == nil {
							baselineRuns[key] = &benchRuns{}
						}
						baselineRuns[key].add(b.N, nsPer)
					} else if runs := baselineRuns[key]; runs != nil {
						b.ReportMetric(nsPer/median(runs.nsPer), "ours/baseline")
					}
				})
			}
		}
	}
}

// runtimeStats is a snapshot of the process's CPU time and heap allocation count.
type runtimeStats struct {
	cpu     time.Duration
	mallocs uint64
}

func (s *runtimeStats) read() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.cpu, s.mallocs = cpuTime(), ms.Mallocs
}

// routeAttributes returns the attributes of n routes with distinct policies, as Envoy sends them.
func routeAttributes(tb testing.TB, n int) []*structpb.Struct {
	tb.Helper()
	attrs := make([]*structpb.Struct, n)
	for i := range attrs {
		fields := map[string]any{"credentials": true, "max_age": 600,
			"origins": []string{fmt.Sprintf("https://app%d.example.com", i), "https://admin.example.com"}}
		text, err := envoyfilter.MetadataText(envoyfilter.Metadata("cors", fields), envoyfilter.OneLine)
		if err != nil {
			tb.Fatal(err)
		}
		attrs[i] = &structpb.Struct{Fields: map[string]*structpb.Value{attrRouteMetadata: structpb.NewStringValue(text)}}
	}
	return attrs
}

// BenchmarkPolicyCache looks up 10,000 distinct route policies in turn: all cached (the hit
// path, which must not allocate), and through a cache bounded to 1,000 (every lookup a miss
// that compiles, evicts and stores; the cache must stay within its bound).
func BenchmarkPolicyCache(b *testing.B) {
	const routes = 10000
	attrs := routeAttributes(b, routes)
	ctx := context.Background()
	b.Run("hit/policies=10000", func(b *testing.B) {
		srv, err := New(Options{CacheSize: routes})
		if err != nil {
			b.Fatal(err)
		}
		for _, a := range attrs {
			_, _ = srv.lookup(ctx, a)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if res, _ := srv.lookup(ctx, attrs[i]); res.Policy == nil {
				b.Fatal("no policy")
			}
			i = (i + 1) % routes
		}
	})
	b.Run("miss/policies=10000/bound=1000", func(b *testing.B) {
		const bound = 1000
		srv, err := New(Options{CacheSize: bound})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if res, _ := srv.lookup(ctx, attrs[i]); res.Policy == nil {
				b.Fatal("no policy")
			}
			i = (i + 1) % routes
		}
		if n := len(srv.set.Load().textCache.entries); n > bound {
			b.Fatalf("%d cached policies, bound %d", n, bound)
		}
		b.ReportMetric(float64(len(srv.set.Load().textCache.entries)), "entries")
	})
}

// The hit path of the policy lookup allocates nothing: one read-locked map lookup.
func TestPolicyCacheHitDoesNotAllocate(t *testing.T) {
	srv, err := New(Options{})
	require.NoError(t, err)
	attrs := routeAttributes(t, 3)
	ctx := context.Background()
	for _, a := range attrs {
		res, _ := srv.lookup(ctx, a)
		require.NotNil(t, res.Policy)
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		_, _ = srv.lookup(ctx, attrs[i%len(attrs)])
		i++
	})
	assert.Zero(t, allocs)
}

// memoryServerEnv makes the test binary the server process of BenchmarkMemory.
const memoryServerEnv = "CORS_EXTPROC_MEMORY_SERVER"

// memoryServerMain is the server process of BenchmarkMemory, run by TestMain when the test
// binary is started with memoryServerEnv set, so that the client's memory is not counted. It is
// no test function, so the test runner neither counts nor lists it. It prints its address, then
// one measurement (heap in use, stacks in use, resident set, each in bytes) per line read on
// stdin, until stdin closes.
func memoryServerMain() error {
	srv, err := New(Options{})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s := grpc.NewServer(benchServerOptions()...)
	extprocv3.RegisterExternalProcessorServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	fmt.Println("addr", lis.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Println("mem", ms.HeapInuse, ms.StackInuse, residentBytes())
	}
	return in.Err()
}

// residentBytes is the process's resident set size, from /proc/self/statm; 0 where it is missing.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident uint64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0
	}
	return resident * uint64(os.Getpagesize())
}

// memoryServer is a running memoryServerMain process.
type memoryServer struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

// memorySample is one measurement of the server process, in bytes.
type memorySample struct{ heap, stack, rss float64 }

func startMemoryServer(b *testing.B) *memoryServer {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), memoryServerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	m := &memoryServer{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(m.stop)
	for m.out.Scan() {
		if addr, ok := strings.CutPrefix(m.out.Text(), "addr "); ok {
			m.addr = addr
			return m
		}
	}
	b.Fatalf("memory server: no address (%v)", m.out.Err())
	return nil
}

func (m *memoryServer) sample(b *testing.B) memorySample {
	b.Helper()
	if _, err := io.WriteString(m.in, "\n"); err != nil {
		b.Fatal(err)
	}
	for m.out.Scan() {
		var s memorySample
		if _, err := fmt.Sscanf(m.out.Text(), "mem %g %g %g", &s.heap, &s.stack, &s.rss); err == nil {
			return s
		}
	}
	b.Fatalf("memory server: no sample (%v)", m.out.Err())
	return memorySample{}
}

func (m *memoryServer) stop() {
	_ = m.in.Close()
	_ = m.cmd.Wait()
}

func (m *memoryServer) dial(b *testing.B) *grpc.ClientConn {
	b.Helper()
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return conn
}

// reportMemory reports the growth from before to after, per unit.
func reportMemory(b *testing.B, before, after memorySample, units float64, unit string) {
	b.ReportMetric((after.heap-before.heap)/units, "heap-B/"+unit)
	b.ReportMetric((after.stack-before.stack)/units, "stack-B/"+unit)
	b.ReportMetric((after.rss-before.rss)/units, "rss-B/"+unit)
}

// BenchmarkMemory reports (does not assert) what the server process holds for 10,000
// concurrent idle streams, each waiting for its response phase after an allowed actual request,
// spread over ten connections as Envoy would beyond 1,000 streams a connection; and for 1,000
// distinct cached policies. Each iteration starts a fresh server process.
func BenchmarkMemory(b *testing.B) {
	actual := benchShapes(b)[1]
	b.Run("idle-streams=10000", func(b *testing.B) {
		const conns, perConn = 10, 1000
		var total memorySample
		for range b.N {
			m := startMemoryServer(b)
			before := m.sample(b)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for range conns {
				conn := m.dial(b)
				for range perConn {
					wg.Go(func() {
						cs, err := conn.NewStream(ctx, processDesc, processMethod, grpc.ForceCodecV2(rawCodec{}))
						if err == nil {
							err = cs.SendMsg(&actual.request)
						}
						var r replyInfo
						if err == nil {
							err = cs.RecvMsg(&r)
						}
						if err != nil {
							b.Error(err)
						}
					})
				}
			}
			wg.Wait()
			after := m.sample(b)
			cancel()
			total.heap += after.heap - before.heap
			total.stack += after.stack - before.stack
			total.rss += after.rss - before.rss
			m.stop()
		}
		reportMemory(b, memorySample{}, total, float64(b.N*conns*perConn), "stream")
	})
	b.Run("policies=1000", func(b *testing.B) {
		const policies = 1000
		var total memorySample
		for range b.N {
			m := startMemoryServer(b)
			conn := m.dial(b)
			// A first exchange, so that the connection and the server's buffers exist before.
			if _, _, err := exchange(context.Background(), conn, &actual); err != nil {
				b.Fatal(err)
			}
			before := m.sample(b)
			for _, a := range routeAttributes(b, policies) {
				req := &extprocv3.ProcessingRequest{
					Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
						Headers: headerMap([][2]string{{":method", "GET"}, {"origin", "https://admin.example.com"}}), EndOfStream: true}},
					Attributes: map[string]*structpb.Struct{attributesKey: a},
				}
				shape := benchShape{request: encode(b, req), response: actual.response}
				if _, _, err := exchange(context.Background(), conn, &shape); err != nil {
					b.Fatal(err)
				}
			}
			after := m.sample(b)
			total.heap += after.heap - before.heap
			total.stack += after.stack - before.stack
			total.rss += after.rss - before.rss
			m.stop()
		}
		reportMemory(b, memorySample{}, total, float64(b.N*policies), "policy")
	})
}

// BenchmarkReply builds and encodes, with gRPC's proto codec as the server does, the replies
// that depend on the request: the answer to a preflight and the decoration of an actual
// response.
func BenchmarkReply(b *testing.B) {
	codec := encoding.GetCodecV2("proto")
	p, _, err := policy.Compile(benchPolicyFields)
	if err != nil {
		b.Fatal(err)
	}
	preflight := policy.Request{Method: "OPTIONS", Origin: "https://app.example.com", RequestMethod: "PUT",
		HasRequestMethod: true, RequestHeaders: "content-type"}
	b.Run("preflight", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d := p.Decide(&preflight)
			out, err := codec.Marshal(immediateResponse(&d))
			if err != nil {
				b.Fatal(err)
			}
			out.Free()
		}
	})
	b.Run("decorate", func(b *testing.B) {
		actual := p.Decide(&policy.Request{Method: "GET", Origin: "https://app.example.com"})
		b.ReportAllocs()
		for b.Loop() {
			d := p.Decorate(&actual, false)
			out, err := codec.Marshal(continueResponse(&d))
			if err != nil {
				b.Fatal(err)
			}
			out.Free()
		}
	})
}
