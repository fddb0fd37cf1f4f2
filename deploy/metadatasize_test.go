package deploy_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/cors-extproc/cors-extproc/internal/envoyconfig"
	"github.com/cors-extproc/cors-extproc/internal/processor"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// envoyDecoration is what Envoy puts around metadata text: 1.37.0's debug token (its name and
// the spaces after it vary from one process to the next), whitespace runs, a trailing space.
var envoyDecoration = regexp.MustCompile(`^\s*(goo\.gle/debug\w*)?|\s+`)

// TestRealEnvoyMetadataTextSize holds the size `cors-extproc validate --max-policy-bytes` judges
// a route's metadata by (processor.MetadataTextSize) to the text every pinned Envoy sends for
// envoy.yaml's routes, less what the release puts around it, which the server does not count.
func TestRealEnvoyMetadataTextSize(t *testing.T) {
	bins := realenvoy.Binaries(t)
	service := servicetest.Start(t, servicetest.Build(t), deploymentArgs...)
	rec := realenvoy.NewRecorder(t, service.GRPCAddr)
	sites, err := envoyconfig.Read("envoy.yaml", readFile(t, "envoy.yaml"), envoyconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	judged := map[string]int{}
	for _, s := range sites {
		if s.Kind == envoyconfig.KindRoute && s.Metadata != nil {
			judged[s.Name[len(s.VirtualHost.Name)+1:]] = processor.MetadataTextSize(s.Metadata)
		}
	}
	for _, bin := range bins {
		t.Run(bin.Version, func(t *testing.T) {
			s := startDeployStack(t, bin, &servicetest.Service{GRPCAddr: rec.Addr})
			rec.Reset()
			for i, tc := range envoyRouteCases {
				if _, ok := judged[tc.route]; ok {
					s.do(t, tc, fmt.Sprintf("%s-%d", bin.Version, i))
				}
			}
			seen := 0
			for _, st := range rec.Streams() {
				attrs := st.Requests[0].GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
				route := attrs["xds.route_name"].GetStringValue()
				size, ok := judged[route]
				if !ok {
					continue
				}
				seen++
				sent := attrs["xds.route_metadata"].GetStringValue()
				body := strings.TrimSpace(envoyDecoration.ReplaceAllStringFunc(sent, func(m string) string {
					if strings.TrimSpace(m) != "" {
						return ""
					}
					return " "
				}))
				if len(body) != size {
					t.Errorf("route %s: Envoy %s sends %q, %d bytes without its decoration; validate judges %d",
						route, bin.Version, sent, len(body), size)
				}
			}
			if seen == 0 {
				t.Fatal("no stream of a route with metadata was recorded")
			}
		})
	}
}
