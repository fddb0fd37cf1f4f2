package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cors-extproc/cors-extproc/internal/policy"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// policyReloader keeps the server's named-policy set in step with the --policies file. It
// polls the file's content rather than watching for events: a Kubernetes ConfigMap volume
// changes by swapping a `..data` symlink, which path-based watches miss, and a poll every few
// seconds costs one small read. A valid new version is swapped in atomically (streams in flight
// keep the policy they found); an invalid one is logged once, counted, and the last good set
// stays.
type policyReloader struct {
	path    string
	limits  policy.Limits
	proc    *processor.Server
	log     *slog.Logger
	active  [sha256.Size]byte // the content in use
	refused [sha256.Size]byte // the last content refused, so that it is logged once
	readErr string            // the last read error, likewise

	reloads *prometheus.CounterVec
	info    *prometheus.GaugeVec
}

func newPolicyReloader(path string, data []byte, limits policy.Limits, proc *processor.Server, log *slog.Logger, reg prometheus.Registerer) (*policyReloader, error) {
	r := &policyReloader{
		path: path, limits: limits, proc: proc, log: log, active: sha256.Sum256(data),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cors_extproc_policies_reloads_total",
			Help: "Changes of the named-policy file, by whether they were applied (success) or refused (failure).",
		}, []string{"result"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cors_extproc_policies_info",
			Help: "The named-policy set in use: 1, labelled with the SHA-256 of its file.",
		}, []string{"sha256"}),
	}
	for _, c := range []prometheus.Collector{r.reloads, r.info} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("failure")
	r.info.WithLabelValues(hex.EncodeToString(r.active[:])).Set(1)
	return r, nil
}

// run checks the file every interval until ctx ends.
func (r *policyReloader) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.check()
		}
	}
}

// check applies the file's content if it changed and is valid.
func (r *policyReloader) check() {
	data, err := os.ReadFile(r.path)
	if err != nil {
		if err.Error() != r.readErr {
			r.readErr = err.Error()
			r.reloads.WithLabelValues("failure").Inc()
			r.log.Error("named-policy file unreadable; the policies in use stay", "file", r.path, "error", err)
		}
		return
	}
	r.readErr = ""
	sum := sha256.Sum256(data)
	if sum == r.active || sum == r.refused {
		return
	}
	hash := hex.EncodeToString(sum[:])
	named, warnings, err := r.limits.ParseNamed(data)
	if err == nil {
		err = r.proc.SetPolicies(named)
	}
	if err != nil {
		r.refused = sum
		r.reloads.WithLabelValues("failure").Inc()
		var invalid *policy.InvalidError
		if errors.As(err, &invalid) {
			for _, p := range invalid.Problems {
				r.log.Error("named-policy file refused; the policies in use stay", "file", r.path, "sha256", hash, "error", p.Error())
			}
		} else {
			r.log.Error("named-policy file refused; the policies in use stay", "file", r.path, "sha256", hash, "error", err)
		}
		return
	}
	for _, w := range warnings {
		r.log.Warn("policy warning", "file", r.path, "warning", w.String())
	}
	r.info.Reset()
	r.info.WithLabelValues(hash).Set(1)
	r.reloads.WithLabelValues("success").Inc()
	r.active, r.refused = sum, [sha256.Size]byte{}
	r.log.Info("named-policy file reloaded", "file", r.path, "sha256", hash, "named_policies", len(named))
}
