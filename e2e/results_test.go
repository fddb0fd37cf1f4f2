package e2e

import (
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// resultsDir is e2e-results at the repository root (git-ignored); tests run in the package's
// folder.
var resultsDir = filepath.Join("..", "e2e-results")

// report is everything the results page shows.
type report struct {
	// Front says what stood where Envoy stands: envoytest, or which real Envoy release.
	Front string
	// Flags are the service's flags that matter to behaviour.
	Flags    string
	Browser  string
	Started  time.Time
	Duration time.Duration
	Runs     []*caseRun
	Contract []string
	// Preflights counts the preflights the front saw, per route name.
	Preflights map[string]int
}

// writeResults writes results-NAME.html and has Chromium render it into results-NAME.png, so
// that a person can see what the browser did without rerunning the suite; name tells the
// fronts apart. It returns both paths.
func writeResults(b *browserSession, name string, rep report) (string, string, error) {
	dir, err := filepath.Abs(resultsDir)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	var sb strings.Builder
	if err := resultsPage.Execute(&sb, rep); err != nil {
		return "", "", err
	}
	html := filepath.Join(dir, "results-"+name+".html")
	if err := os.WriteFile(html, []byte(sb.String()), 0o644); err != nil {
		return "", "", err
	}
	shot, err := b.screenshot("file://" + html)
	if err != nil {
		return html, "", fmt.Errorf("screenshot: %w", err)
	}
	png := filepath.Join(dir, "results-"+name+".png")
	return html, png, os.WriteFile(png, shot, 0o644)
}

// Verdict is the run's verdict as the page shows it.
func (r *caseRun) Verdict() string {
	switch {
	case r.NotPlayed:
		return "NOT PLAYED"
	case r.Err != nil:
		return "FAIL"
	case r.Observed:
		return "OBSERVED"
	}
	return "PASS"
}

// Calls describes the calls of the run, one line each.
func (r *caseRun) Calls() []string {
	var out []string
	for _, c := range r.Case.Calls {
		method := "GET"
		if m, ok := c.Init["method"].(string); ok {
			method = m
		}
		s := method + " " + c.url(r.Case.Name)
		if c.Init["credentials"] == "include" {
			s += " (credentials)"
		}
		if c.Wait > 0 {
			s = fmt.Sprintf("after %v: %s", c.Wait, s)
		}
		out = append(out, s)
	}
	return out
}

// Wire describes the exchanges of the run, one line each: the request, who answered it (the
// front side's record), and the status and CORS headers Chromium reports it got.
func (r *caseRun) Wire() []string {
	var out []string
	for _, ex := range r.Seen {
		s := ex.Method + " " + ex.Path
		if ex.Preflight {
			s += " (preflight)"
		}
		reply := ownReplyOf(ex.Route)
		switch {
		case ex.Unserved:
			s += fmt.Sprintf(" → %d, not seen by the service or the upstream", ex.Status)
		case ex.Answered:
			s += fmt.Sprintf(" → %d from cors-extproc", ex.Status)
		case reply == upstreamTimeout:
			// The upstream gets the request, but answers only after Envoy did.
			s += fmt.Sprintf(" → %d from Envoy itself (%s)", ex.Status, reply)
		case ex.UpstreamCalled:
			s += fmt.Sprintf(" → %d from upstream", ex.Status)
		case reply != "":
			s += fmt.Sprintf(" → %d from Envoy itself (%s)", ex.Status, reply)
		default:
			s += fmt.Sprintf(" → %d", ex.Status)
		}
		var cors []string
		for _, h := range ex.Response {
			if k := strings.ToLower(h.Key); strings.HasPrefix(k, "access-control-") || k == "vary" {
				cors = append(cors, strings.TrimPrefix(k, "access-control-")+": "+h.Value)
			}
		}
		if len(cors) == 0 {
			cors = append(cors, "no CORS headers")
		}
		s += " [" + strings.Join(cors, "; ") + "]"
		if ex.Err != "" {
			s += " ERROR " + ex.Err
		}
		out = append(out, s)
	}
	return out
}

// ownReplyOf is the reply Envoy makes itself on the API route named route, if any.
func ownReplyOf(route string) ownReply {
	for _, r := range apiRoutes {
		if r.name == route {
			return r.reply
		}
	}
	return ""
}

// routeView is one row of the page's routes table.
type routeView struct {
	Host, Channel, Policy, Upstream string
	Preflights                      int
}

// Routes lists the API routes and their policies, for the page's reference table.
func (rep report) Routes() []routeView {
	var out []routeView
	for _, r := range apiRoutes {
		v := routeView{Host: r.name + apiDomain, Channel: string(r.channel), Policy: policyJSON(r.policy), Preflights: rep.Preflights[r.name]}
		switch {
		case r.upstream.ownPreflight:
			v.Upstream = "answers preflights itself: " + upstreamAllowMethods + ", " + upstreamAllowHeaders
		case r.upstream.ownACAO:
			v.Upstream = "adds its own Access-Control-Allow-Origin: *"
		}
		if r.reply != "" {
			v.Upstream = "real Envoy only: Envoy answers, " + string(r.reply)
		}
		out = append(out, v)
	}
	return out
}

// PrivateNetwork sums up what this Chromium sent for Private Network Access.
func (rep report) PrivateNetwork() string {
	requests, with := 0, 0
	for _, r := range rep.Runs {
		if r.Case.Group != "Private Network Access" {
			continue
		}
		for _, ex := range r.Seen {
			requests++
			if ex.Request.Get("Access-Control-Request-Private-Network") != "" {
				with++
			}
		}
	}
	if with == 0 {
		return fmt.Sprintf("Access-Control-Request-Private-Network not sent by this Chromium (none of the %d requests of the cases below carried it)", requests)
	}
	return fmt.Sprintf("Access-Control-Request-Private-Network sent on %d of %d requests; see the cases below", with, requests)
}

// Counts returns how many runs have each verdict.
func (rep report) Counts() map[string]int {
	n := map[string]int{}
	for _, r := range rep.Runs {
		n[r.Verdict()]++
	}
	return n
}

var resultsPage = template.Must(template.New("results").Funcs(template.FuncMap{
	"class":     func(v string) string { return strings.ReplaceAll(strings.ToLower(v), " ", "-") },
	"reason":    corsReason,
	"notPlayed": func() string { return notPlayed },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cors-extproc browser suite</title>
<style>
body { font: 14px/1.35 sans-serif; margin: 16px; color: #222; width: 1560px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 1px solid #bbb; padding: 4px 6px; vertical-align: top; text-align: left; }
th { background: #eee; }
td.v { font-weight: bold; text-align: center; }
tr.pass td.v { background: #c8f0c8; } tr.fail td.v { background: #f5b5b5; } tr.observed td.v { background: #f5e6a8; }
tr.not-played td { color: #888; } tr.not-played td.v { background: #e4e4e4; }
tr.fail { background: #fff0f0; }
.mono { font-family: monospace; font-size: 12px; word-break: break-all; }
.group { background: #f6f6f6; font-weight: bold; }
.note { color: #664d00; } .err { color: #a00000; } .console { color: #555; }
</style></head><body>
<h1>cors-extproc browser suite · front: {{.Front}}</h1>
<div><b>cors-extproc {{.Flags}}</b> · {{.Browser}} · {{.Started.Format "2006-01-02 15:04:05 MST"}} · {{.Duration}} ·
{{with .Counts}}<b>{{index . "PASS"}} pass</b>, <b>{{index . "FAIL"}} fail</b>, {{index . "OBSERVED"}} observed
{{- with index . "NOT PLAYED"}}, {{.}} not played (real Envoy only){{end}}{{end}}
· ext_proc contract: {{if .Contract}}<span class="err">{{len .Contract}} failed exchange(s)</span>{{else}}no exchange failed{{end}}</div>
<div><b>Private Network Access:</b> {{.PrivateNetwork}}</div>
<p>Each case loads a page from one origin in headless Chromium and calls an API through the front named above, which hands
each request and response to the real cors-extproc binary over ext_proc: envoytest plays Envoy in Go; a real Envoy runs
deploy/envoy.yaml's filter chain and clusters with the suite's routes. "Browser (JavaScript)" is what the page's fetch got;
"On the wire" is each request, who answered it (as the front side recorded), and the status and CORS headers Chromium
reports it received.</p>
<table>
<col style="width:150px"><col style="width:280px"><col style="width:220px"><col style="width:320px"><col style="width:390px"><col style="width:200px">
<tr><th>Case</th><th>Page origin · calls</th><th>Expected</th><th>Browser (JavaScript)</th><th>On the wire</th><th>Verdict</th></tr>
{{- $group := ""}}
{{- range .Runs}}
{{- if ne .Case.Group $group}}{{$group = .Case.Group}}<tr><td colspan="6" class="group">{{$group}}</td></tr>{{end}}
<tr class="{{class .Verdict}}">
<td class="mono">{{.Case.Name}}</td>
<td class="mono">{{.Case.Page}}{{range .Calls}}<br>{{.}}{{end}}</td>
<td>{{.Case.Want}}</td>
<td class="mono">{{range $i, $o := .Out}}{{if $i}}<br>{{end}}{{$o}}{{end}}
{{- range .Console}}{{with reason .}}<br><span class="console">Chromium: {{.}}</span>{{end}}{{end}}</td>
<td class="mono">{{range .Wire}}{{.}}<br>{{end}}</td>
<td class="v">{{.Verdict}}{{if .Err}}<div class="err" style="font-weight:normal;text-align:left">{{.Err}}</div>{{end}}
{{- if .NotPlayed}}<div class="note" style="font-weight:normal;text-align:left">{{notPlayed}}</div>{{end}}
{{- if .Note}}<div class="note" style="font-weight:normal;text-align:left">{{.Note}}</div>{{end}}</td>
</tr>
{{- end}}
</table>
{{if .Contract}}<h2 class="err">ext_proc exchanges that failed</h2><ul class="mono">{{range .Contract}}<li>{{.}}</li>{{end}}</ul>{{end}}
<h2>Routes</h2>
<table><col style="width:220px"><col style="width:260px"><col><col style="width:330px"><col style="width:90px">
<tr><th>Host</th><th>Policy channel</th><th>Policy</th><th>Upstream</th><th>Preflights seen</th></tr>
{{- range .Routes}}
<tr><td class="mono">{{.Host}}</td><td>{{.Channel}}</td><td class="mono">{{.Policy}}</td><td>{{.Upstream}}</td><td>{{.Preflights}}</td></tr>
{{- end}}
</table>
<p>Named-policy file (--policies):</p>
<pre class="mono">{{.NamedPolicies}}</pre>
</body></html>
`))

// NamedPolicies is the named-policy file given to the binary.
func (report) NamedPolicies() string { return namedPolicies }

// corsReason keeps the reason of Chromium's "blocked by CORS policy" message, or "" for other
// messages.
func corsReason(msg string) string {
	const marker = "has been blocked by CORS policy: "
	if _, reason, ok := strings.Cut(msg, marker); ok {
		return reason
	}
	if strings.Contains(msg, "Private Network") || strings.Contains(msg, "local network") || strings.Contains(msg, "Local Network") {
		return msg
	}
	return ""
}
