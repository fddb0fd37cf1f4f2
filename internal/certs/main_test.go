package certs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine is still running after the last of them:
// a server, stream, connection or timer a test leaves behind is a leak the code under test may
// have in production too, and one that would make later tests flaky.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
