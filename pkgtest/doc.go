// Package pkgtest holds the acceptance tests of the Debian package: a fresh
// Debian 12 root (mmdebstrap, cached under build/pkgtest keyed by its
// package list) gets `apt install ./swanpath_*.deb`, boots with systemd as
// init in systemd-nspawn inside a lab namespace, and runs swanpathd.service
// against a kernel-libipsec peer: READY, journald fields, the watchdog, an
// upgrade and a purge. They need root and run with `make test`.
package pkgtest
