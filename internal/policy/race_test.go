//go:build race

package policy

// raceEnabled: the race detector makes sync.Pool drop items at random, so regexp's pooled
// matchers allocate now and then, and allocation counts are not meaningful.
const raceEnabled = true
