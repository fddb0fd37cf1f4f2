package e2e

import (
	"encoding/json"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// Origins of the pages. Every *.test name resolves to the front (browser_test.go), so these are
// plain http origins without a port.
const (
	appOrigin   = "http://app.example.test"
	adminOrigin = "http://admin.example.test"
	evilOrigin  = "http://evil.example.test"
	// publicHost is served on the front's second port, which Chromium is told is on the public
	// internet, so that a call from it to the first port crosses into the loopback address space.
	// A *.localhost name makes the page a secure context, which Chromium requires before it
	// lets a page reach a more private address space at all; its origin carries the port.
	publicHost = "public.localhost"
)

// apiDomain follows the name of each API route's host: simple.api.example.test and so on. The
// APIs are same-site with the pages (example.test), so SameSite=Lax cookies go along on
// credentialed calls and only CORS decides what the page may read.
const apiDomain = ".api.example.test"

// channel is how a route's policy reaches the service (contract §3 lookup order). The suite
// spreads its routes over the channels so that each is used by a real browser at least once.
type channel string

const (
	routeMetadata       channel = "route metadata, cors namespace"
	virtualHostMetadata channel = "virtual-host metadata, cors namespace"
	grpcMetadata        channel = "gRPC metadata x-cors-policy (JSON)"
)

// apiRoute is one API route: its host, how its policy is carried, the policy, and the upstream's
// behaviour.
type apiRoute struct {
	name     string // the route name; the host is name + apiDomain
	channel  channel
	policy   map[string]any
	upstream api
	// reply, when set, is the reply Envoy makes itself on this route after the request phase;
	// only the real-Envoy front makes it (envoyfront_test.go).
	reply ownReply
}

// ownReply is a reply Envoy makes itself after ext_proc's request phase, instead of passing the
// upstream's (docs/envoy-extproc.md section 7). The real-Envoy front builds each from Envoy's
// own parts (ownReplyRoute); envoytest does not make them, so their cases are real-Envoy only.
type ownReply string

const (
	noHealthyUpstream ownReply = "router 503: a cluster without endpoints"
	upstreamTimeout   ownReply = "router 504: the route's timeout passes before the upstream answers"
	directResponse    ownReply = "direct_response"
	rbacDenied        ownReply = "403 from the RBAC filter"
	rateLimited       ownReply = "429 from the local_ratelimit filter (one token per hour)"
)

// ownReplyPolicy is the policy of the routes Envoy answers itself: two origins (so that a
// rejected origin gets no Access-Control-Allow-Origin at all), credentials (the calls carry
// cookies, as a login flow's do), and the rate limit header the local_ratelimit filter writes
// exposed.
var ownReplyPolicy = map[string]any{"origins": []string{appOrigin, adminOrigin}, "credentials": true,
	"exposed_headers": []string{"x-ratelimit-limit"}}

// namedPolicies is the file given to the binary with --policies; routes name its entries with
// `ref`.
const namedPolicies = `# Named policies of the browser suite.
put-api:
  origins: ["http://app.example.test"]
  methods: [GET, PUT]
  headers: [content-type, x-request-id]
`

// apiRoutes are the routes the cases call.
var apiRoutes = []apiRoute{
	{name: "simple", channel: routeMetadata,
		policy: map[string]any{"origins": []string{appOrigin, adminOrigin}}},
	{name: "put", channel: routeMetadata,
		policy: map[string]any{"ref": "put-api"}},
	{name: "creds", channel: routeMetadata,
		policy: map[string]any{"origins": []string{appOrigin}, "credentials": true}},
	{name: "nocreds", channel: routeMetadata,
		policy: map[string]any{"origins": []string{appOrigin}}},
	{name: "anycreds", channel: routeMetadata,
		policy: map[string]any{"credentials": true}},
	{name: "expose", channel: grpcMetadata,
		policy: map[string]any{"origins": []string{appOrigin}, "exposed_headers": []string{"x-total-count"}}},
	{name: "maxage", channel: routeMetadata,
		policy: map[string]any{"origins": []string{appOrigin}, "methods": []string{"PUT"}, "headers": []string{"x-request-id"}, "max_age": 600}},
	{name: "maxage0", channel: routeMetadata,
		policy: map[string]any{"origins": []string{appOrigin}, "methods": []string{"PUT"}, "headers": []string{"x-request-id"}, "max_age": 0}},
	{name: "continue", channel: routeMetadata,
		policy:   map[string]any{"origins": []string{appOrigin}, "preflight_continue": true},
		upstream: api{ownPreflight: true}},
	{name: "wild", channel: virtualHostMetadata,
		policy: map[string]any{"origins": []string{"http://*.sub.example.test"}}},
	{name: "regex", channel: routeMetadata,
		policy: map[string]any{"origins": []string{`http://(app|admin)\.example\.test`}}},
	// "credential" is a typo of "credentials": the policy fails validation and is unusable.
	{name: "broken", channel: routeMetadata,
		policy:   map[string]any{"origins": []string{appOrigin}, "credential": true},
		upstream: api{ownACAO: true}},
	{name: "pna", channel: routeMetadata,
		policy: map[string]any{"methods": []string{"PUT"}, "headers": []string{"x-request-id"}, "private_network": true}},

	{name: "down", channel: routeMetadata, policy: ownReplyPolicy, reply: noHealthyUpstream},
	{name: "slow", channel: routeMetadata, policy: ownReplyPolicy, reply: upstreamTimeout, upstream: api{slow: true}},
	{name: "direct", channel: routeMetadata, policy: ownReplyPolicy, reply: directResponse},
	{name: "denied", channel: routeMetadata, policy: ownReplyPolicy, reply: rbacDenied},
	{name: "limited", channel: routeMetadata, policy: ownReplyPolicy, reply: rateLimited},
}

// envoyRoutes returns the route table both fronts serve: each API host with its route, as
// Envoy matches it by :authority, and siteRoute for every other host. The real-Envoy front
// turns it into Envoy's route configuration (envoyfront_test.go).
func envoyRoutes() routeTable {
	routes := make(map[string]route, len(apiRoutes))
	for _, r := range apiRoutes {
		er := envoytest.Route{Name: r.name}
		switch r.channel {
		case routeMetadata:
			er.Metadata = envoyfilter.Metadata("cors", r.policy)
		case virtualHostMetadata:
			er.VirtualHostMetadata = envoyfilter.Metadata("cors", r.policy)
		case grpcMetadata:
			er.GRPCMetadata = map[string]string{"x-cors-policy": policyJSON(r.policy)}
		}
		routes[r.name+apiDomain] = route{envoy: er, upstream: r.upstream, reply: r.reply}
	}
	return routeTable{routes: routes, site: siteRoute}
}

// siteRoute serves every other host (the pages): a route without a policy, which the service
// leaves alone.
var siteRoute = route{envoy: envoytest.Route{Name: "site"}, upstream: api{}}

// policyJSON is the policy as JSON, for x-cors-policy and the results page.
func policyJSON(p map[string]any) string {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // the table above holds only JSON values
	}
	return string(b)
}
