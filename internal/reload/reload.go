// Package reload keeps what a server loaded from files in step with those files while it runs:
// the named-policy file (a ConfigMap) and the TLS certificate, key and client CA (a Secret).
//
// It polls the files' content rather than watching for events: a Kubernetes ConfigMap or
// Secret volume changes by swapping a "..data" symlink, which a watch on the file paths misses,
// and a poll every few seconds costs a few small reads. New content is handed over once; content
// that is refused, and a file that cannot be read, are reported once each, and what is in use
// stays.
package reload

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"
)

// Poller reads a set of files every interval and hands their content over whenever it changed.
// Its methods are not safe for concurrent use: Run owns it.
type Poller struct {
	read   func() ([][]byte, error)
	apply  func([][]byte) error
	failed func(error)

	current [sha256.Size]byte // the content in use
	refused [sha256.Size]byte // the content last refused, so that it is reported once
	readErr string            // the last read error reported, likewise; "" after a good read
}

// New returns a Poller for the content now in use, initial. read reads the files (one []byte
// each, in a fixed order); its error should name the file. apply swaps new content in, or
// returns why it refuses it; then what is in use stays. failed is told of each read error once,
// until a read succeeds, and of each refused content once, until the content changes.
func New(initial [][]byte, read func() ([][]byte, error), apply func([][]byte) error, failed func(error)) *Poller {
	return &Poller{read: read, apply: apply, failed: failed, current: checksum(initial)}
}

// Run polls every interval (which must be positive) until ctx ends.
func (p *Poller) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.Poll()
		}
	}
}

// Poll reads the files once and hands their content to apply if it changed since it was last
// applied or refused.
func (p *Poller) Poll() {
	data, err := p.read()
	if err != nil {
		if err.Error() != p.readErr {
			p.readErr = err.Error()
			p.failed(err)
		}
		return
	}
	p.readErr = ""
	switch sum := checksum(data); sum {
	case p.current:
		// Back to the content in use (a broken change undone): refusing the same content
		// again later is news again.
		p.refused = [sha256.Size]byte{}
	case p.refused:
	default:
		if err := p.apply(data); err != nil {
			p.refused = sum
			p.failed(err)
			return
		}
		p.current, p.refused = sum, [sha256.Size]byte{}
	}
}

// checksum identifies the files' content together; the lengths keep bytes moved from one file
// to the next from giving the same sum.
func checksum(data [][]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, b := range data {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
