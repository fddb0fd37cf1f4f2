package main

import (
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

const monitoringDir = "../../deploy/k8s/overlays/monitoring/"

// startFullServer runs the server with every optional metric on: a named-policy file (reload
// metrics) and TLS (certificate reload metrics).
func startFullServer(t *testing.T) *runningServer {
	t.Helper()
	pki := servicetest.NewPKI(t)
	pki.Leaf(t, "server", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	return startServer(t, "--policies", writeFile(t, "policies.yaml", policiesYAML),
		"--tls-cert", pki.Path("server.crt"), "--tls-key", pki.Path("server.key"))
}

// scrape reads the server's /metrics before any request.
func scrape(t *testing.T, s *runningServer) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, "http://"+s.adminAddr+"/metrics")
	require.Equal(t, 200, code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return families
}

// seriesNames are the names a query can select: each family's, and a histogram's or summary's
// _bucket, _sum and _count.
func seriesNames(families map[string]*dto.MetricFamily) map[string]bool {
	names := map[string]bool{}
	for name, f := range families {
		names[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
		}
	}
	return names
}

// queryMetrics parses a PromQL expression with Prometheus's parser and returns the metrics it
// selects.
func queryMetrics(t *testing.T, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	require.NoError(t, err, expr)
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			require.NotEmpty(t, vs.Name, "%s: a selector without a metric name", expr)
			names = append(names, vs.Name)
		}
		return nil
	})
	require.NotEmpty(t, names, expr)
	return names
}

// The alerting rules parse with Prometheus's own rule parser, cover what an operator must hear
// of, and name only metrics the running server exposes.
func TestMonitoringAlertingRules(t *testing.T) {
	exposed := seriesNames(scrape(t, startFullServer(t)))
	data, err := os.ReadFile(monitoringDir + "prometheusrule.yaml")
	require.NoError(t, err)
	var resource struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       map[string]any `json:"spec"`
	}
	require.NoError(t, yaml.UnmarshalStrict(data, &resource))
	require.Equal(t, "monitoring.coreos.com/v1/PrometheusRule", resource.APIVersion+"/"+resource.Kind)
	spec, err := yaml.Marshal(resource.Spec)
	require.NoError(t, err)
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	require.Empty(t, errs)

	var used []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "only alerting rules here: %s", r.Expr)
			assert.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
			assert.NotEmpty(t, r.Annotations["description"], r.Alert)
			for _, name := range queryMetrics(t, r.Expr) {
				assert.True(t, exposed[name], "%s: %s is not on /metrics", r.Alert, name)
				used = append(used, name)
			}
		}
	}
	for _, subject := range []string{"cors_extproc_policy_errors_total", "cors_extproc_limits_exceeded_total",
		"cors_extproc_policies_reloads_total", "cors_extproc_tls_reloads_total",
		"cors_extproc_exchange_duration_seconds_bucket", "cors_extproc_stream_errors_total"} {
		assert.Contains(t, used, subject, "no alert on %s", subject)
	}
}

// The dashboard's queries parse and select only metrics the running server exposes, and every
// cors_extproc metric is on it.
func TestMonitoringDashboard(t *testing.T) {
	exposed := seriesNames(scrape(t, startFullServer(t)))
	data, err := os.ReadFile(monitoringDir + "grafana-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	require.NotEmpty(t, dash.Panels)
	// Grafana's variables, as Grafana substitutes them.
	vars := strings.NewReplacer("$__rate_interval", "1m", `"$job"`, `".*"`)
	var used []string
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			for _, name := range queryMetrics(t, vars.Replace(target.Expr)) {
				assert.True(t, exposed[name], "panel %q: %s is not on /metrics", p.Title, name)
				used = append(used, name)
			}
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((\w+), \w+\)$`)
	for _, v := range dash.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue
		}
		m := labelValues.FindStringSubmatch(q["query"].(string))
		require.NotNil(t, m, "variable %s: %v", v.Name, q["query"])
		assert.True(t, exposed[m[1]], "variable %s: %s is not on /metrics", v.Name, m[1])
	}
	for name := range exposed {
		if strings.HasPrefix(name, "cors_extproc_") && !strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_count") &&
			!(strings.HasPrefix(name, "cors_extproc_exchange_duration_seconds") && !strings.HasSuffix(name, "_bucket")) {
			assert.True(t, slices.Contains(used, name), "%s is on no panel", name)
		}
	}
}
