#!/bin/sh
# build-deb.sh builds $DIST/dbrouter_${DEB_VERSION}_${DEB_ARCH}.deb from
# this checkout: `make package` runs it (the Makefile passes GO and
# RUNTIME_TUNING, the linker flag every routerd is built with). Other
# settings: DEB_MAINTAINER, DEB_COMPRESS (below).
#
# The binaries are static (CGO_ENABLED=0): routerd and routerctl need
# nothing from libc, so the package depends only on adduser and installs on
# any Debian or Ubuntu release of its architecture, whatever glibc the build
# machine has.
set -eu
cd "$(dirname "$0")/.."

: "${GO:=go}"
: "${DIST:=dist}"
: "${RUNTIME_TUNING:?RUNTIME_TUNING unset: run make package}"
: "${DEB_VERSION:=$(packaging/deb-version.sh)}"
: "${DEB_ARCH:=$(dpkg --print-architecture)}"
: "${DEB_MAINTAINER:=dbrouter developers <dbrouter@localhost>}"
# gzip: every dpkg reads it, and at level 6 it packs the 40 MB of binaries
# in ~3 s where dpkg-deb's default (xz -6) takes ~50 s on a 2-core machine,
# for a package 13% smaller. DEB_COMPRESS=xz for that.
: "${DEB_COMPRESS:=gzip}"

# Debian architecture -> Go's.
goarm=
case $DEB_ARCH in
amd64 | arm64 | riscv64 | s390x | loong64) goarch=$DEB_ARCH ;;
i386) goarch=386 ;;
armhf) goarch=arm goarm=7 ;;
armel) goarch=arm goarm=5 ;;
ppc64el) goarch=ppc64le ;;
*)
	echo "build-deb.sh: no Go architecture for Debian's $DEB_ARCH" >&2
	exit 1
	;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
umask 022

# -buildvcs=true: routerd --version and dbrouter_build_info carry the
# revision the package was built from, whatever GOFLAGS this machine sets.
for cmd in routerd routerctl; do
	CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
		"$GO" build -buildvcs=true -ldflags="$RUNTIME_TUNING" -o "$root/usr/bin/$cmd" "./cmd/$cmd"
done

install -d "$root/lib/systemd/system" "$root/etc/dbrouter" "$root/usr/share/doc/dbrouter/docs" "$root/DEBIAN"
install -m 0644 packaging/systemd/routerd-proxy.service packaging/systemd/routerd-arbiter.service "$root/lib/systemd/system/"
install -m 0644 packaging/etc/proxy.yaml.example packaging/etc/arbiter.yaml.example "$root/etc/dbrouter/"
install -m 0644 README.md "$root/usr/share/doc/dbrouter/"
install -m 0644 docs/*.md "$root/usr/share/doc/dbrouter/docs/"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
# Files under /etc are conffiles: an upgrade keeps an operator's edits.
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) >"$root/DEBIAN/conffiles"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: dbrouter
Version: $DEB_VERSION
Architecture: $DEB_ARCH
Maintainer: $DEB_MAINTAINER
Installed-Size: $size
Depends: adduser
Section: net
Priority: optional
Description: replication router for MariaDB and MongoDB across data centres
 routerd runs as a proxy on every application host (MySQL/MariaDB and
 MongoDB wire protocols on localhost: writes to the current primary, reads
 to the nearest healthy replica) or as one of 3 or 5 arbiters, the Raft
 voters that decide failovers and switchovers without losing acknowledged
 writes. routerctl is the operator's CLI. The systemd units
 routerd-proxy.service and routerd-arbiter.service read
 /etc/dbrouter/proxy.yaml and /etc/dbrouter/arbiter.yaml (examples beside
 them) and are not enabled at installation.
CONTROL

mkdir -p "$DIST"
out="$DIST/dbrouter_${DEB_VERSION}_${DEB_ARCH}.deb"
case $DEB_COMPRESS in
gzip) level=-z6 ;;
*) level= ;;
esac
dpkg-deb --build --root-owner-group -Z"$DEB_COMPRESS" $level "$root" "$out" >/dev/null
echo "$out"
