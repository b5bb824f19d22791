// Package packaging holds no code: its directory carries what `make package`
// puts in the Debian package (systemd units, example configs, maintainer
// scripts, the script that builds the .deb), and its test builds that
// package, inspects it, and runs the routerd it contains.
package packaging
