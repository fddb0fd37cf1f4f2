package processor

import (
	"sync"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// resolution is what one policy source (a metadata text or an x-cors-policy value) resolves to.
// Found is false when the source names no policy at all, so the lookup goes on to the next
// channel (contract section 3); Policy is then nil.
type resolution struct {
	Found  bool
	Policy *policy.Policy
	// Name is the named policy the source referred to (ref or Envoy Gateway annotation), for
	// logs; empty for a policy spelled out in place.
	Name string
}

// policyCache maps the exact text of a policy source to its resolution, so that a route's
// policy is parsed and compiled on its first request only (contract section 3: the same string
// repeats on every request of a route). It is bounded: when full, an arbitrary entry is evicted
// (Go's map iteration order), which costs nothing to track and keeps the hit path a single
// read-locked map lookup. Routes are few compared with the bound, so evictions are rare in
// practice.
type policyCache struct {
	mu      sync.RWMutex
	max     int
	entries map[string]resolution
}

func newPolicyCache(max int) *policyCache {
	return &policyCache{max: max, entries: make(map[string]resolution)}
}

func (c *policyCache) get(key string) (resolution, bool) {
	c.mu.RLock()
	r, ok := c.entries[key]
	c.mu.RUnlock()
	return r, ok
}

// add stores r under key unless another stream stored one first, and returns the entry now in
// the cache, whether it was this call that stored it, and the number of entries. Compiling
// happens outside the lock, so two streams may compile the same new source at once; only the
// first result is kept, and only its caller logs a broken policy.
func (c *policyCache) add(key string, r resolution) (stored resolution, added bool, entries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[key]; ok {
		return old, false, len(c.entries)
	}
	if len(c.entries) >= c.max {
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = r
	return r, true, len(c.entries)
}
