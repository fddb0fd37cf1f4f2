package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// configMapVolume lays out a directory the way the kubelet projects a ConfigMap: the file is a
// symlink to ..data/FILE, and ..data a symlink to a timestamped directory that an update
// replaces by renaming a new symlink over ..data.
type configMapVolume struct {
	t       *testing.T
	dir     string
	version int
}

func newConfigMapVolume(t *testing.T, content string) *configMapVolume {
	v := &configMapVolume{t: t, dir: t.TempDir()}
	v.update(content)
	require.NoError(t, os.Symlink(filepath.Join("..data", "policies.yaml"), filepath.Join(v.dir, "policies.yaml")))
	return v
}

func (v *configMapVolume) path() string { return filepath.Join(v.dir, "policies.yaml") }

func (v *configMapVolume) update(content string) {
	v.version++
	ts := fmt.Sprintf("..2026_11_25_%d", v.version)
	require.NoError(v.t, os.Mkdir(filepath.Join(v.dir, ts), 0o755))
	require.NoError(v.t, os.WriteFile(filepath.Join(v.dir, ts, "policies.yaml"), []byte(content), 0o644))
	tmp := filepath.Join(v.dir, "..data_tmp")
	require.NoError(v.t, os.Symlink(ts, tmp))
	require.NoError(v.t, os.Rename(tmp, filepath.Join(v.dir, "..data")))
}

// The named-policy file is reloaded when its ConfigMap changes; an invalid version is refused,
// logged once and counted, and the last good set stays.
func TestRunReloadsPolicies(t *testing.T) {
	vol := newConfigMapVolume(t, "spa: {origins: [\"https://old.test\", \"https://x.test\"]}\n")
	s := startServer(t, "--policies", vol.path(), "--policies-reload-interval", "20ms")
	envoy := envoytest.New(dial(t, s.grpcAddr), envoytest.Config{AllowModeOverride: true, MessageTimeout: 5 * time.Second})
	route := envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": "spa"})}
	acao := func(origin string) string {
		res, err := envoy.Do(context.Background(), route, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: origin}}}, nil)
		require.NoError(t, err)
		v, _ := res.Response.Get("access-control-allow-origin")
		return v
	}
	metric := func(name string) string {
		_, body := httpGet(t, "http://"+s.adminAddr+"/metrics")
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, name) {
				return l
			}
		}
		return ""
	}
	require.Equal(t, "https://old.test", acao("https://old.test"))
	first := metric("cors_extproc_policies_info")
	require.NotEmpty(t, first)

	vol.update("spa: {origins: [\"https://new.test\", \"https://x.test\"]}\n")
	require.Eventually(t, func() bool { return acao("https://new.test") == "https://new.test" }, 5*time.Second, 20*time.Millisecond)
	assert.Empty(t, acao("https://old.test"))
	assert.Equal(t, `cors_extproc_policies_reloads_total{result="success"} 1`, metric(`cors_extproc_policies_reloads_total{result="success"}`))
	assert.NotEqual(t, first, metric("cors_extproc_policies_info"))

	vol.update("spa: {origins: [\"https://(bad\"]}\n")
	require.Eventually(t, func() bool {
		return metric(`cors_extproc_policies_reloads_total{result="failure"}`) == `cors_extproc_policies_reloads_total{result="failure"} 1`
	}, 5*time.Second, 20*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // several more polls: the refused version is not logged again
	assert.Equal(t, "https://new.test", acao("https://new.test"), "the last good set stays")
	assert.Equal(t, 1, strings.Count(s.stderr.String(), `origins[0] \"https://(bad\": invalid regex`), s.stderr.String())
	assert.Equal(t, `cors_extproc_policies_reloads_total{result="failure"} 1`, metric(`cors_extproc_policies_reloads_total{result="failure"}`))
}
