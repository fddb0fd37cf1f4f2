package processor

import (
	"fmt"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// vtMessage is the marshal code go-control-plane generates with vtprotobuf. It is compiled only
// with the build tag vtprotobuf: without it no message has these methods and Codec encodes
// everything with proto.Marshal, as the standard codec does.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict([]byte) (int, error)
}

// Codec is the gRPC codec of the server: grpc-go's proto codec, except that the replies the
// processor sends (ProcessingResponse) are encoded by the vtprotobuf marshaller go-control-plane
// generates for them, which walks the message with generated code instead of protobuf
// reflection. That code exists only in binaries built with -tags vtprotobuf; without the tag
// Codec behaves exactly as the standard codec. go-control-plane generates marshal code only, so
// incoming messages are decoded by proto.Unmarshal as before, and messages without the code
// (health, reflection) go through proto.Marshal. The bytes on the wire are the same
// (TestCodecMatchesProto), and the name is "proto", so clients see no difference. Install it
// with grpc.ForceServerCodecV2 rather than encoding.RegisterCodecV2, which would change every
// gRPC client of the process too.
//
// BENCHMARKS.md has what it saves.
type Codec struct{}

// Name is the content-subtype: the standard codec's, as the wire format is the standard one.
func (Codec) Name() string { return "proto" }

// Marshal encodes v. A buffer at or above gRPC's pooling threshold comes from its pool and goes
// back to it once the message is written, as the standard codec does.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	resp, ok := v.(*extprocv3.ProcessingResponse)
	if !ok {
		return marshalProto(v)
	}
	for i := range staticReplies {
		if staticReplies[i].reply == resp {
			// Shared by every stream: gRPC only reads a SliceBuffer, and its Free does nothing.
			return mem.BufferSlice{mem.SliceBuffer(staticReplies[i].wire)}, nil
		}
	}
	r, ok := any(resp).(vtMessage)
	if !ok {
		return marshalProto(v)
	}
	size := r.SizeVT()
	if !vtOrderMatches(resp, size) {
		return marshalProto(v)
	}
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if err := marshalVT(r, buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if err := marshalVT(r, *buf); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// staticReplies are the shared replies of mutation.go with their encoding, made once by
// proto.Marshal: sending one of them encodes nothing.
var staticReplies = func() []struct {
	reply *extprocv3.ProcessingResponse
	wire  []byte
} {
	replies := []*extprocv3.ProcessingResponse{replyContinueAndSkip, replyContinueRequest, replyContinueResponse,
		replyRequestBody, replyResponseBody, replyRequestTrailers, replyResponseTrailers}
	out := make([]struct {
		reply *extprocv3.ProcessingResponse
		wire  []byte
	}, len(replies))
	for i, r := range replies {
		wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			panic(fmt.Sprintf("processor codec: encoding a static reply: %v", err))
		}
		out[i].reply, out[i].wire = r, wire
	}
	return out
}()

// vtOrderMatches reports whether vtprotobuf writes r in the order proto.Marshal does.
// proto.Marshal writes oneof fields after all the others, to keep its historic output;
// vtprotobuf writes every field in number order. They agree unless the response oneof (fields
// 1 to 7) is set beside a later field, as in a reply with mode_override; then r is left to
// proto.Marshal. No nested message of a reply mixes a oneof with other fields.
func vtOrderMatches(r *extprocv3.ProcessingResponse, size int) bool {
	oneof, ok := r.Response.(interface{ SizeVT() int })
	return !ok || oneof.SizeVT() == size
}

// marshalVT fills buf, sized by SizeVT, exactly. The marshaller writes from the end of buf
// backwards, so a message that changed size since SizeVT would leave garbage in front.
func marshalVT(r vtMessage, buf []byte) error {
	n, err := r.MarshalToSizedBufferVTStrict(buf)
	if err == nil && n != len(buf) {
		err = fmt.Errorf("processor codec: ProcessingResponse encoded to %d bytes, sized %d", n, len(buf))
	}
	return err
}

// Unmarshal decodes data into v with proto.Unmarshal, which copies every string and bytes
// field out of data: the message owns its buffers once data is freed (gRPC frees it as soon as
// Unmarshal returns).
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("processor codec: cannot unmarshal into %T, not a proto.Message", v)
	}
	if len(data) == 1 {
		// One buffer, the usual case for a small message: read it in place, no copy.
		return proto.Unmarshal(data[0].ReadOnlyData(), m)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func marshalProto(v any) (mem.BufferSlice, error) {
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("processor codec: cannot marshal %T, not a proto.Message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func messageOf(v any) proto.Message {
	switch m := v.(type) {
	case protoadapt.MessageV2:
		return m
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m)
	}
	return nil
}
