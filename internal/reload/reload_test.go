package reload

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

// fakeFiles plays the files a Poller reads and records what it is told.
type fakeFiles struct {
	data    [][]byte
	readErr error
	valid   map[string]bool // content apply accepts
	applied []string
	failed  []string
}

func (f *fakeFiles) poller(initial string) *Poller {
	return New([][]byte{[]byte(initial)},
		func() ([][]byte, error) { return f.data, f.readErr },
		func(d [][]byte) error {
			if !f.valid[string(d[0])] {
				return errors.New("refused " + string(d[0]))
			}
			f.applied = append(f.applied, string(d[0]))
			return nil
		},
		func(err error) { f.failed = append(f.failed, err.Error()) })
}

func (f *fakeFiles) set(s string) { f.data, f.readErr = [][]byte{[]byte(s)}, nil }

func TestPoller(t *testing.T) {
	f := &fakeFiles{valid: map[string]bool{"v1": true, "v2": true, "v3": true}}
	p := f.poller("v1")
	// Each step changes the files, polls once, and lists what apply took and what was
	// reported since the start.
	steps := []struct {
		do      func()
		applied []string
		failed  []string
	}{
		{func() { f.set("v1") }, nil, nil},                                 // unchanged
		{func() { f.set("v2") }, []string{"v2"}, nil},                      // changed: applied
		{func() { f.set("v2") }, []string{"v2"}, nil},                      // not again
		{func() { f.set("bad") }, []string{"v2"}, []string{"refused bad"}}, // refused, reported
		{func() { f.set("bad") }, []string{"v2"}, []string{"refused bad"}}, // not again
		{func() { f.readErr = errors.New("gone") }, []string{"v2"}, []string{"refused bad", "gone"}},
		{func() {}, []string{"v2"}, []string{"refused bad", "gone"}},                              // the same read error: once
		{func() { f.set("bad") }, []string{"v2"}, []string{"refused bad", "gone"}},                // still refused
		{func() { f.set("v2") }, []string{"v2"}, []string{"refused bad", "gone"}},                 // back to the content in use
		{func() { f.set("bad") }, []string{"v2"}, []string{"refused bad", "gone", "refused bad"}}, // news again
		{func() { f.set("v3") }, []string{"v2", "v3"}, []string{"refused bad", "gone", "refused bad"}},
		{func() { f.readErr = errors.New("gone") }, []string{"v2", "v3"}, []string{"refused bad", "gone", "refused bad", "gone"}},
	}
	for i, s := range steps {
		s.do()
		p.Poll()
		assert.Equal(t, s.applied, f.applied, "step %d: applied", i)
		assert.Equal(t, s.failed, f.failed, "step %d: reported", i)
	}
}

// Bytes moved from one file to the next are a change.
func TestChecksumSeparatesFiles(t *testing.T) {
	assert.NotEqual(t, checksum([][]byte{[]byte("ab"), []byte("c")}), checksum([][]byte{[]byte("a"), []byte("bc")}))
	assert.Equal(t, checksum([][]byte{[]byte("ab"), nil}), checksum([][]byte{[]byte("ab"), {}}))
}
