//go:build vtprotobuf

package processor

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the standard codec compared against
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// The codec puts on the wire exactly what the standard codec and a deterministic proto.Marshal
// put there, for every kind of reply. Only this build has vtprotobuf's marshal code, so only
// here does the comparison test anything (without the tag Codec calls proto.Marshal itself);
// `make test` runs the package with the tag. The test fails if the tag no longer brings the
// code in, or if no reply is encoded by it.
func TestCodecMatchesProto(t *testing.T) {
	require.Implements(t, (*vtMessage)(nil), &extprocv3.ProcessingResponse{},
		"-tags vtprotobuf no longer compiles go-control-plane's marshal code")
	std := encoding.GetCodecV2("proto")
	byVT := 0
	for name, reply := range codecReplies(t) {
		if !isStaticReply(reply) && vtOrderMatches(reply, any(reply).(vtMessage).SizeVT()) {
			byVT++
		}
		t.Run(name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(reply)
			require.NoError(t, err)
			got, err := Codec{}.Marshal(reply)
			require.NoError(t, err)
			assert.Equal(t, want, got.Materialize())
			stdOut, err := std.Marshal(reply)
			require.NoError(t, err)
			assert.Equal(t, stdOut.Materialize(), got.Materialize())
			got.Free()
			stdOut.Free()

			var back extprocv3.ProcessingResponse
			require.NoError(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, &back))
			assert.True(t, proto.Equal(reply, &back))
		})
	}
	assert.Positive(t, byVT, "no reply is encoded by vtprotobuf's code")
}

// isStaticReply reports whether r is one of the replies the codec sends as stored bytes.
func isStaticReply(r *extprocv3.ProcessingResponse) bool {
	for i := range staticReplies {
		if staticReplies[i].reply == r {
			return true
		}
	}
	return false
}
