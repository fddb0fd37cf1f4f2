package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/cors-extproc/cors-extproc/internal/envoyconfig"
	"github.com/cors-extproc/cors-extproc/internal/policy"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// siteResolution is the policy a site of Envoy configuration gets, found through the server's
// own Resolver and lookup (processor.Lookup, contract section 3). inherited says the policy is
// the virtual host's or the default, so that a problem is reported where it is written.
type siteResolution struct {
	processor.Resolution
	source    string // where the policy was found, for people
	inherited bool
	disabled  bool // ext_proc is off on the route
}

func resolveSite(r *processor.Resolver, s *envoyconfig.Site, defaultName string) siteResolution {
	if s.ExtProcDisabled {
		return siteResolution{disabled: true, source: "ext_proc disabled on the route"}
	}
	switch s.Kind {
	case envoyconfig.KindHTTPRoute, envoyconfig.KindGateway:
		// A resource, not a request: its annotation is the policy it gives its routes.
		res := r.Named(s.Annotation, "annotation "+envoyconfig.GatewayAnnotation)
		return siteResolution{Resolution: res, source: res.Where}
	}
	src := processor.Sources{RouteMetadata: func() processor.Resolution { return r.Metadata(s.Metadata) }}
	if s.HasGRPCPolicy {
		src.GRPCPolicy = func() processor.Resolution { return r.JSON(s.GRPCPolicy) }
	}
	if s.VirtualHost != nil {
		src.VirtualHostMetadata = func() processor.Resolution { return r.Metadata(s.VirtualHost.Metadata) }
	}
	if defaultName != "" {
		src.Default = func() processor.Resolution { return r.Named(defaultName, "--default-policy") }
	}
	res, ch := processor.Lookup(&src)
	switch ch {
	case processor.ChannelGRPCMetadata:
		return siteResolution{Resolution: res, source: "ExtProcPerRoute grpc_initial_metadata x-cors-policy"}
	case processor.ChannelRouteMetadata:
		return siteResolution{Resolution: res, source: res.Where}
	case processor.ChannelVirtualHostMetadata:
		return siteResolution{Resolution: res, source: "virtual host " + s.VirtualHost.Name + " " + res.Where, inherited: true}
	case processor.ChannelDefault:
		return siteResolution{Resolution: res, source: "--default-policy", inherited: true}
	}
	return siteResolution{source: "no CORS policy"}
}

// policyLimitFlags defines, on a tool's flag set, the server's flags that bound a policy, so
// that the tool judges policies as the server configured that way does.
func policyLimitFlags(fs *flag.FlagSet) *policy.Limits {
	l := policy.DefaultLimits
	fs.IntVar(&l.MaxOrigins, "max-origins", l.MaxOrigins, "as the server's flag: most origins elements in one policy")
	fs.IntVar(&l.MaxRegexInsts, "max-regex-size", l.MaxRegexInsts, "as the server's flag: largest regex origins element, in RE2 instructions")
	return &l
}

// namedFile is a named-policy file as the operator tools read it. Unlike the server they go on
// with an invalid file: its broken policies are unusable, as routes naming them would see them.
type namedFile struct {
	path     string
	policies map[string]*policy.Policy
	warnings []policy.Warning
	problems []*policy.FieldError
}

// loadNamed reads the --policies file; an empty path is an empty set. The error is for a file
// that cannot be read or is not a map of policies at all.
func loadNamed(path string, limits policy.Limits) (namedFile, error) {
	if path == "" {
		return namedFile{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return namedFile{path: path}, fmt.Errorf("--policies: %w", err)
	}
	f, err := parseNamed(path, data, limits)
	if err != nil {
		return f, fmt.Errorf("--policies %w", err)
	}
	return f, nil
}

// parseNamed parses a named-policy file read from path.
func parseNamed(path string, data []byte, limits policy.Limits) (namedFile, error) {
	f := namedFile{path: path}
	named, warnings, err := limits.ParseNamed(data)
	var invalid *policy.InvalidError
	switch {
	case errors.As(err, &invalid):
		f.problems = invalid.Problems
	case err != nil:
		return f, fmt.Errorf("%s: %w", path, err)
	}
	f.policies, f.warnings = named, warnings
	return f, nil
}
