// Package version says which build of the gateway is running.
package version

import (
	"runtime"
	"runtime/debug"
)

// version and commit are set at build time by the Makefile:
// -ldflags "-X .../internal/version.version=v1.2.3 -X .../internal/version.commit=<sha>".
var version, commit string

// Version returns the release of this build: the one set at build time, else the module
// version the go command recorded, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// Commit returns the VCS revision the binary was built from: the one set at build time, else
// the one the go command recorded (with "-dirty" when the tree had changes), else "unknown".
func Commit() string {
	if commit != "" {
		return commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "unknown"
	}
	return rev + dirty
}

// GoVersion returns the Go release the binary was built with.
func GoVersion() string { return runtime.Version() }
