// Package kongimport turns Kong CORS plugin configurations into cors-extproc policies: the
// logic of `cors-extproc import-kong`.
//
// It reads two inputs. File reads a Kong declarative configuration as decK (`deck gateway
// dump`) or `kong config db_export` writes it, YAML or JSON, `_format_version` "1.1", "2.1" or
// "3.0": every plugin named "cors" in it (global, nested in services, routes and consumers, or
// at the top level with `service:`, `route:` and `consumer:` references by name or id), and, for
// every route, the one Kong would run. Form reads one plugin given as Kong admin API form
// parameters (`config.origin=mockbin.com`), as Kong's documentation shows them, 0.x names
// included.
//
// Each distinct plugin configuration becomes one policy (the fields of docs/cors-semantics.md
// section 1). Where Kong 3.11 (kong/plugins/cors/handler.lua and schema.lua) behaves
// differently for that configuration (docs/cors-semantics.md section 9), the policy carries a
// warning saying what changes; a configuration that cannot be represented here (a regex only
// PCRE accepts, a negative max_age) carries errors instead and is left out of the named-policy
// file. Every policy that is written has passed policy.Compile.
package kongimport
