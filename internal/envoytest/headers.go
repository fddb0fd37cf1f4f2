package envoytest

import "github.com/cors-extproc/cors-extproc/internal/envoyfilter"

// Header and Headers are envoyfilter's header fields, named here too because every Request and
// Response of this package is made of them.
type (
	Header  = envoyfilter.Header
	Headers = envoyfilter.Headers
)
