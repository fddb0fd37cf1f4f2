package kongimport

import (
	"errors"
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// formatVersions are the declarative `_format_version` values decK and Kong write: "1.1" (Kong
// 1.x and 2.x), "2.1" (Kong 2.x with decK's newer defaults) and "3.0" (Kong 3.x). The CORS
// plugin's shape is the same in all three; only the fields a Kong release knows differ, and
// every field Kong 3.11 has is read whatever the version says.
var formatVersions = map[string]bool{"1.1": true, "2.1": true, "3.0": true}

// ref is a foreign reference as Kong's declarative loader accepts it: a string holding a name or
// an id (decK writes names, `kong config db_export` ids), or a map with `id` and/or `name`
// (decK's top-level routes). null and an absent key are no reference.
type ref struct {
	set      bool
	id, name string // a string reference fills both: it may be either
}

func (r *ref) UnmarshalYAML(n *yaml.Node) error {
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil
	case n.Kind == yaml.ScalarNode:
		*r = ref{set: true, id: n.Value, name: n.Value}
		return nil
	case n.Kind == yaml.MappingNode:
		var m struct{ ID, Name string }
		if err := n.Decode(&m); err != nil {
			return err
		}
		*r = ref{set: m.ID != "" || m.Name != "", id: m.ID, name: m.Name}
		return nil
	}
	return fmt.Errorf("line %d: want a name, an id or {id: …, name: …}", n.Line)
}

// String shows the reference as the file wrote it.
func (r ref) String() string {
	if r.name != "" {
		return strconv.Quote(r.name)
	}
	return strconv.Quote(r.id)
}

// The entities of a declarative file, with only the keys that matter here; yaml ignores the
// others (hosts, paths, protocols, tags …).
type (
	fileService struct {
		ID      string       `yaml:"id"`
		Name    string       `yaml:"name"`
		Routes  []fileRoute  `yaml:"routes"`
		Plugins []filePlugin `yaml:"plugins"`
	}
	fileRoute struct {
		ID      string       `yaml:"id"`
		Name    string       `yaml:"name"`
		Service ref          `yaml:"service"`
		Plugins []filePlugin `yaml:"plugins"`
	}
	fileConsumer struct {
		ID       string       `yaml:"id"`
		Username string       `yaml:"username"`
		CustomID string       `yaml:"custom_id"`
		Name     string       `yaml:"name"` // consumer groups
		Plugins  []filePlugin `yaml:"plugins"`
	}
	filePlugin struct {
		ID            string         `yaml:"id"`
		Name          string         `yaml:"name"`
		Enabled       *bool          `yaml:"enabled"`
		Config        map[string]any `yaml:"config"`
		Service       ref            `yaml:"service"`
		Route         ref            `yaml:"route"`
		Consumer      ref            `yaml:"consumer"`
		ConsumerGroup ref            `yaml:"consumer_group"`
	}
)

// document is a declarative file flattened: every service, route and plugin in document order,
// with references resolved to indices.
type document struct {
	services []service
	routes   []route
	plugins  []plugin
	errs     []string // references that name nothing in the file
}

type service struct{ id, name string }

type route struct {
	id, name string
	label    string // name, else id, else "#N" by document order
	service  int    // index in services; -1 for a route without a service
}

// plugin is one plugin entry and the scope Kong gives it.
type plugin struct {
	filePlugin
	route, service int    // indices, -1 when unscoped
	consumer       string // "consumer \"alice\"" when consumer- or consumer-group-scoped
	unresolved     bool   // a reference names nothing: the plugin is reported and skipped
}

// parseDocument reads a declarative file. The top-level sections are walked in the order the
// file has them; inside a service, its plugins come before its routes, and a route's before the
// next route. That order is "document order", which decides which plugin names a merged policy.
func parseDocument(data []byte) (*document, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("not a Kong declarative file: %w", err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a Kong declarative file: want a map with _format_version, services, routes, plugins …")
	}
	top := root.Content[0].Content
	d := &document{}
	var (
		version   *yaml.Node
		topRoutes []fileRoute
		pending   []pendingPlugin
	)
	for i := 0; i+1 < len(top); i += 2 {
		key, val := top[i].Value, top[i+1]
		var err error
		switch key {
		case "_format_version":
			version = val
		case "services":
			var ss []fileService
			if err = val.Decode(&ss); err == nil {
				for _, s := range ss {
					si := len(d.services)
					d.services = append(d.services, service{id: s.ID, name: s.Name})
					for _, p := range s.Plugins {
						pending = append(pending, pendingPlugin{p: p, service: si, route: -1})
					}
					for _, r := range s.Routes {
						ri := d.addRoute(r, si)
						for _, p := range r.Plugins {
							pending = append(pending, pendingPlugin{p: p, service: -1, route: ri})
						}
					}
				}
			}
		case "routes":
			var rs []fileRoute
			if err = val.Decode(&rs); err == nil {
				for _, r := range rs {
					ri := d.addRoute(r, -1)
					topRoutes = append(topRoutes, r)
					for _, p := range r.Plugins {
						pending = append(pending, pendingPlugin{p: p, service: -1, route: ri})
					}
				}
			}
		case "plugins":
			var ps []filePlugin
			if err = val.Decode(&ps); err == nil {
				for _, p := range ps {
					pending = append(pending, pendingPlugin{p: p, service: -1, route: -1, top: true})
				}
			}
		case "consumers", "consumer_groups":
			var cs []fileConsumer
			if err = val.Decode(&cs); err == nil {
				for _, c := range cs {
					for _, p := range c.Plugins {
						pending = append(pending, pendingPlugin{p: p, service: -1, route: -1, consumer: consumerLabel(key, c)})
					}
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	if version == nil {
		return nil, errors.New(`no _format_version: a decK or "kong config db_export" file has one ("1.1", "2.1" or "3.0")`)
	}
	if !formatVersions[version.Value] {
		return nil, fmt.Errorf(`_format_version %q: want "1.1", "2.1" or "3.0"`, version.Value)
	}

	// Services and routes are all known now, so references resolve whatever their order.
	first := len(d.routes) - len(topRoutes)
	for i, r := range topRoutes {
		if !r.Service.set {
			continue
		}
		if si := d.findService(r.Service); si >= 0 {
			d.routes[first+i].service = si
		} else {
			d.errs = append(d.errs, fmt.Sprintf("route %q: service %s is not in the file", d.routes[first+i].label, r.Service))
		}
	}
	for _, pp := range pending {
		d.plugins = append(d.plugins, d.resolve(pp))
	}
	return d, nil
}

// pendingPlugin is a plugin entry before its references are resolved; top marks an entry of
// the top-level plugins list, whose scope comes from its references alone.
type pendingPlugin struct {
	p              filePlugin
	service, route int
	consumer       string
	top            bool
}

func (d *document) addRoute(r fileRoute, si int) int {
	label := r.Name
	if label == "" {
		label = r.ID
	}
	if label == "" {
		label = "#" + strconv.Itoa(len(d.routes)+1)
	}
	d.routes = append(d.routes, route{id: r.ID, name: r.Name, label: label, service: si})
	return len(d.routes) - 1
}

func consumerLabel(section string, c fileConsumer) string {
	kind := "consumer"
	if section == "consumer_groups" {
		kind = "consumer group"
	}
	for _, s := range []string{c.Username, c.Name, c.CustomID, c.ID} {
		if s != "" {
			return kind + " " + strconv.Quote(s)
		}
	}
	return kind
}

// resolve gives a plugin entry its scope. A nested plugin takes its parent as scope (Kong's
// declarative loader fills in the foreign key); a `service:` or `route:` it sets itself adds to
// that. A consumer or consumer group reference makes the plugin consumer-scoped, which the CORS
// plugin's schema forbids (`consumer = typedefs.no_consumer` in kong/plugins/cors/schema.lua).
func (d *document) resolve(pp pendingPlugin) plugin {
	p := plugin{filePlugin: pp.p, route: pp.route, service: pp.service, consumer: pp.consumer}
	if p.Route.set && p.route < 0 {
		p.route = d.findRoute(p.Route)
		p.unresolved = p.route < 0
	}
	if p.Service.set && p.service < 0 {
		p.service = d.findService(p.Service)
		p.unresolved = p.unresolved || p.service < 0
	}
	// Only a cors plugin's dangling reference matters here.
	if p.unresolved && p.Name == "cors" {
		d.errs = append(d.errs, p.describe(d)+": the file has no such route or service; skipped")
	}
	switch {
	case p.consumer != "":
	case p.Consumer.set:
		p.consumer = "consumer " + p.Consumer.String()
	case p.ConsumerGroup.set:
		p.consumer = "consumer group " + p.ConsumerGroup.String()
	}
	return p
}

// findService returns the index of the service r names, by id first, then by name.
func (d *document) findService(r ref) int {
	return find(d.services, r, func(s service) (string, string) { return s.id, s.name })
}

// findRoute returns the index of the route r names, by id first, then by name.
func (d *document) findRoute(r ref) int {
	return find(d.routes, r, func(rt route) (string, string) { return rt.id, rt.name })
}

// find returns the index of the entity r names: an id match wins over a name match, as Kong
// resolves a reference that could be either. -1 when none matches.
func find[T any](entities []T, r ref, key func(T) (id, name string)) int {
	byName := -1
	for i, e := range entities {
		id, name := key(e)
		if r.id != "" && id == r.id {
			return i
		}
		if byName < 0 && r.name != "" && name == r.name {
			byName = i
		}
	}
	return byName
}

// describe names a plugin entry by where it applies, for reports.
func (p *plugin) describe(d *document) string {
	name := p.Name
	if name == "" {
		name = "unnamed"
	}
	var where string
	switch {
	case p.consumer != "":
		where = " of " + p.consumer
	case p.route >= 0 && p.service >= 0:
		where = fmt.Sprintf(" of route %q and service %q", d.routes[p.route].label, d.serviceLabel(p.service))
	case p.route >= 0:
		where = fmt.Sprintf(" of route %q", d.routes[p.route].label)
	case p.service >= 0:
		where = fmt.Sprintf(" of service %q", d.serviceLabel(p.service))
	case p.Route.set:
		where = " of route " + p.Route.String()
	case p.Service.set:
		where = " of service " + p.Service.String()
	default:
		return "global " + name + " plugin"
	}
	return name + " plugin" + where
}

func (d *document) serviceLabel(i int) string {
	if d.services[i].name != "" {
		return d.services[i].name
	}
	return d.services[i].id
}
