package processor

import "sync"

// policyCache maps the exact text of a policy source to its Resolution, so that a route's
// policy is parsed and compiled on its first request only (contract section 3: the same string
// repeats on every request of a route). It is bounded: when full, an arbitrary entry is evicted
// (Go's map iteration order), which costs nothing to track and keeps the hit path a single
// read-locked map lookup. Routes are few compared with the bound, so evictions are rare in
// practice.
type policyCache struct {
	mu      sync.RWMutex
	max     int
	entries map[string]Resolution
}

func newPolicyCache(max int) *policyCache {
	return &policyCache{max: max, entries: make(map[string]Resolution)}
}

func (c *policyCache) get(key string) (Resolution, bool) {
	c.mu.RLock()
	r, ok := c.entries[key]
	c.mu.RUnlock()
	return r, ok
}

// add stores r under key unless another stream stored one first, and returns the entry now in
// the cache, whether it was this call that stored it, and the number of entries. Compiling
// happens outside the lock, so two streams may compile the same new source at once; only the
// first result is kept, and only its caller logs a broken policy.
func (c *policyCache) add(key string, r Resolution) (stored Resolution, added bool, entries int) {
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
