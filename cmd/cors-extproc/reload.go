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
	"github.com/cors-extproc/cors-extproc/internal/reload"
)

// policyReloader keeps the server's named-policy set in step with the --policies file, through
// package reload (which polls the file's content: a ConfigMap volume changes by swapping a
// symlink that watches miss). A valid new version is swapped in atomically (streams in flight
// keep the policy they found); an invalid one is logged once, counted, and the last good set
// stays.
type policyReloader struct {
	path   string
	limits policy.Limits
	proc   *processor.Server
	log    *slog.Logger
	poller *reload.Poller

	reloads *prometheus.CounterVec
	info    *prometheus.GaugeVec
}

func newPolicyReloader(path string, data []byte, limits policy.Limits, proc *processor.Server, log *slog.Logger, reg prometheus.Registerer) (*policyReloader, error) {
	r := &policyReloader{
		path: path, limits: limits, proc: proc, log: log,
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
	r.info.WithLabelValues(fileHash(data)).Set(1)
	r.poller = reload.New([][]byte{data}, r.read, r.apply, r.failed)
	return r, nil
}

// run checks the file every interval until ctx ends.
func (r *policyReloader) run(ctx context.Context, interval time.Duration) {
	r.poller.Run(ctx, interval)
}

func (r *policyReloader) read() ([][]byte, error) {
	data, err := os.ReadFile(r.path)
	if err != nil {
		return nil, &readError{err}
	}
	return [][]byte{data}, nil
}

// readError marks a failure to read the file, which failed logs apart from a refused version.
type readError struct{ error }

func (e *readError) Unwrap() error { return e.error }

// refusal is why a version of the file was refused, with the hash of that version.
type refusal struct {
	sha256 string
	err    error
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

// apply swaps in a new version of the file if it is valid.
func (r *policyReloader) apply(contents [][]byte) error {
	data := contents[0]
	named, warnings, err := r.limits.ParseNamed(data)
	if err == nil {
		err = r.proc.SetPolicies(named)
	}
	if err != nil {
		return &refusal{sha256: fileHash(data), err: err}
	}
	for _, w := range warnings {
		r.log.Warn("policy warning", "file", r.path, "warning", w.String())
	}
	hash := fileHash(data)
	r.info.Reset()
	r.info.WithLabelValues(hash).Set(1)
	r.reloads.WithLabelValues("success").Inc()
	r.log.Info("named-policy file reloaded", "file", r.path, "sha256", hash, "named_policies", len(named))
	return nil
}

// failed logs and counts an unreadable file or a refused version; package reload calls it
// once for each.
func (r *policyReloader) failed(err error) {
	r.reloads.WithLabelValues("failure").Inc()
	var unreadable *readError
	if errors.As(err, &unreadable) {
		r.log.Error("named-policy file unreadable; the policies in use stay", "file", r.path, "error", unreadable.error)
		return
	}
	var hash string
	if refused := (*refusal)(nil); errors.As(err, &refused) {
		hash = refused.sha256
	}
	var invalid *policy.InvalidError
	if errors.As(err, &invalid) {
		for _, p := range invalid.Problems {
			r.log.Error("named-policy file refused; the policies in use stay", "file", r.path, "sha256", hash, "error", p.Error())
		}
		return
	}
	r.log.Error("named-policy file refused; the policies in use stay", "file", r.path, "sha256", hash, "error", err)
}

// fileHash is the SHA-256 of the file's content, as sha256sum prints it.
func fileHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
