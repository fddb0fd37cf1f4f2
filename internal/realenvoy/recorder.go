package realenvoy

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Stream is one ext_proc stream as a Recorder saw it: what Envoy sent, what the server
// answered, in order.
type Stream struct {
	// Metadata is the stream's gRPC initial metadata, as Envoy sent it (x-cors-policy among
	// it), without the keys gRPC itself adds.
	Metadata map[string][]string
	Requests []*extprocv3.ProcessingRequest
	// Responses[i] answers Requests[i]; it is nil where the server sent no answer.
	Responses []*extprocv3.ProcessingResponse
}

// Recorder is an ext_proc server that stands between Envoy and the real server and records
// every message of every stream: what a given Envoy release really sends.
type Recorder struct {
	extprocv3.UnimplementedExternalProcessorServer
	// Addr is where NewRecorder serves it ("" for NewRecorderFor).
	Addr string
	// Alter, when set, may change the server's reply before it goes on to Envoy; the recording
	// holds the reply as changed. It shows how Envoy takes a reply the server never sends (a
	// mode_override left at DEFAULT, say). s holds the stream so far: its last request is the
	// one res answers. Set it before the first stream opens.
	Alter func(s *Stream, res *extprocv3.ProcessingResponse)

	backend extprocv3.ExternalProcessorClient
	mu      sync.Mutex
	streams []*Stream
}

// NewRecorder serves a Recorder on loopback that forwards every stream to the ext_proc server
// at backend. It answers gRPC health checks SERVING itself, as the ext_proc cluster of the
// shipped configurations checks its endpoints. It stops when the test ends.
func NewRecorder(t testing.TB, backend string) *Recorder {
	t.Helper()
	conn, err := grpc.NewClient(backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	// Connected before the first stream: a stream that waits for the connection could miss
	// Envoy's per-message timeout, and the request would go on unprocessed.
	conn.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("recorder: no connection to %s: %v", backend, s)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewRecorderFor(conn)
	r.Addr = ln.Addr().String()
	srv := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(srv, r)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		_ = conn.Close()
	})
	return r
}

// NewRecorderFor returns a Recorder, not served, that forwards every stream on backend: the
// caller serves it (in memory, say, in front of an in-process server).
func NewRecorderFor(backend grpc.ClientConnInterface) *Recorder {
	return &Recorder{backend: extprocv3.NewExternalProcessorClient(backend)}
}

// Streams returns the streams recorded so far, in the order they opened.
func (r *Recorder) Streams() []*Stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Copies taken under the lock: a test may read them while Envoy still sends on other
	// streams, and Process appends to those.
	out := make([]*Stream, len(r.streams))
	for i, s := range r.streams {
		c := *s
		c.Requests = slices.Clone(s.Requests)
		c.Responses = slices.Clone(s.Responses)
		out[i] = &c
	}
	return out
}

// Reset forgets the recorded streams.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.streams = nil
	r.mu.Unlock()
}

// Process forwards one stream, message by message, recording both directions.
func (r *Recorder) Process(down extprocv3.ExternalProcessor_ProcessServer) error {
	md, _ := metadata.FromIncomingContext(down.Context())
	rec := &Stream{Metadata: map[string][]string{}}
	for k, v := range md {
		switch k {
		case ":authority", "content-type", "user-agent", "grpc-accept-encoding", "grpc-timeout", "te":
		default:
			rec.Metadata[k] = v
		}
	}
	r.mu.Lock()
	r.streams = append(r.streams, rec)
	r.mu.Unlock()

	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	up, err := r.backend.Process(metadata.NewOutgoingContext(ctx, metadata.MD(rec.Metadata).Copy()))
	if err != nil {
		return err
	}
	for {
		req, err := down.Recv()
		if errors.Is(err, io.EOF) {
			return up.CloseSend()
		}
		if err != nil {
			return err
		}
		r.mu.Lock()
		rec.Requests = append(rec.Requests, proto.Clone(req).(*extprocv3.ProcessingRequest))
		rec.Responses = append(rec.Responses, nil)
		i := len(rec.Requests) - 1
		r.mu.Unlock()
		if err := up.Send(req); err != nil {
			return err
		}
		if req.GetObservabilityMode() {
			continue
		}
		res, err := up.Recv()
		if err != nil {
			return err
		}
		r.mu.Lock()
		if r.Alter != nil {
			r.Alter(rec, res)
		}
		rec.Responses[i] = proto.Clone(res).(*extprocv3.ProcessingResponse)
		r.mu.Unlock()
		if err := down.Send(res); err != nil {
			return err
		}
	}
}
