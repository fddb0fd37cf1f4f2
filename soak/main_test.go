package soak

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the suite when a goroutine outlives it: a load worker, a client connection or
// the reader of the server's log left running would skew the next run's numbers.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
