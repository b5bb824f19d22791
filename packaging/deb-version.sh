#!/bin/sh
# deb-version.sh prints the Debian version of the package built from this
# checkout, from `git describe --tags --always`:
#   v1.2.3             -> 1.2.3
#   v1.2.3-4-gabc1234  -> 1.2.3+git4.abc1234   (4 commits after the tag: sorts after 1.2.3)
#   abc1234 (no tag, or one not starting with a digit)
#                      -> 0.0~git20261202.abc1234  (commit day: sorts before any 0.0 release
#                                                    and after the builds of earlier days)
# A Debian upstream version must start with a digit and, the package having
# no Debian revision, must not contain a hyphen.
set -eu
cd "$(dirname "$0")/.."
desc=$(git describe --tags --always)
# Without a tag, describe prints the abbreviated hash, which may start with
# a digit too: only a describe that names a tag takes the first branch.
if ! git describe --tags >/dev/null 2>&1; then
	desc=untagged-$desc
fi
case $desc in
v[0-9]* | [0-9]*)
	desc=${desc#v}
	# TAG-N-gSHA: N commits after TAG. The tag itself may hold hyphens (v1.0-rc1).
	if printf '%s\n' "$desc" | grep -Eq -- '-[0-9]+-g[0-9a-f]+$'; then
		sha=${desc##*-g}
		rest=${desc%-g*}
		n=${rest##*-}
		tag=${rest%-*}
		desc="$tag+git$n.$sha"
	fi
	# v1.0-rc1 -> 1.0~rc1: a pre-release sorts before its release.
	printf '%s\n' "$desc" | sed 's/-/~/g; s/[^A-Za-z0-9.+~]/./g'
	;;
*)
	date=$(git log -1 --format=%cd --date=format:%Y%m%d)
	printf '0.0~git%s.%s\n' "$date" "$(git rev-parse --short HEAD)"
	;;
esac
