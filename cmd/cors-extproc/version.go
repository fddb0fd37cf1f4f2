package main

import (
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// buildVersion is the version --version, the startup log and cors_extproc_build_info report.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	return versionOf(version, info, ok)
}

// versionOf picks the version: the one stamped in by the build; else the module version, which
// `go install github.com/cors-extproc/cors-extproc/cmd/cors-extproc@v1.2.3` records; else the
// commit the toolchain recorded (with -buildvcs), marked when the tree had local changes; else
// "dev".
func versionOf(stamped string, info *debug.BuildInfo, ok bool) string {
	if stamped != "" {
		return stamped
	}
	if !ok {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision == "" {
		return "dev"
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if modified == "true" {
		revision += "-dirty"
	}
	return "dev-" + revision
}

// registerBuildInfo adds cors_extproc_build_info, 1 labelled with the version and the Go
// release, so that dashboards show which build each pod runs.
func registerBuildInfo(reg prometheus.Registerer, goVersion string) error {
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cors_extproc_build_info",
		Help: "1, labelled with the version of the running binary and the Go release that built it.",
	}, []string{"version", "goversion"})
	if err := reg.Register(info); err != nil {
		return err
	}
	info.WithLabelValues(buildVersion(), goVersion).Set(1)
	return nil
}
