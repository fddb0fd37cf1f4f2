package processor

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine is still running after the last of them:
// a server, stream, connection or timer a test leaves behind is a leak the code under test may
// have in production too, and one that would make later tests flaky.
//
// Started with memoryServerEnv set, the test binary is instead the server process of
// BenchmarkMemory and runs no test.
func TestMain(m *testing.M) {
	if os.Getenv(memoryServerEnv) != "" {
		if err := memoryServerMain(); err != nil {
			fmt.Fprintln(os.Stderr, "memory server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
