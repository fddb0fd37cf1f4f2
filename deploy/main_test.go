package deploy_test

import (
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine is still running after the last of them:
// a server, stream, connection or timer a test leaves behind is a leak the code under test may
// have in production too, and one that would make later tests flaky.
//
// Helm's chart loader logs, at level INFO through the default logger, each symbolic link it
// follows (the chart's policies file is one, by design); only warnings are shown.
func TestMain(m *testing.M) {
	if os.Getenv(noopServerEnv) != "" {
		os.Exit(serveNoop())
	}
	slog.SetLogLoggerLevel(slog.LevelWarn)
	goleak.VerifyTestMain(m)
}
