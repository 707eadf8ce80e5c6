#!/usr/bin/env bash
# packaging/dist.sh VERSION [OUT]: the release artifacts in OUT (default
# dist/), run by `make dist VERSION=x.y.z` from the repository root. For
# linux/amd64 and linux/arm64: a tarball, a .deb and an .rpm (nFPM, from
# packaging/nfpm.yaml), an SBOM per binary (CycloneDX), and SHA256SUMS over
# all of them. Reproducible: the same commit gives byte-identical files
# (-trimpath, no build id, every timestamp from SOURCE_DATE_EPOCH = the
# commit's date, sorted tar entries with fixed owners, gzip -n).
set -euo pipefail
export LC_ALL=C TZ=UTC
cd "$(dirname "$0")/.."

VERSION=${1:?usage: packaging/dist.sh VERSION [OUT]}
VERSION=${VERSION#v}
OUT=${2:-dist}
GO=${GO:-go}
PLUGINS=${PLUGINS:-archive sql slack http}
ARCHES=${ARCHES:-amd64 arm64}
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
COMMIT=$(git rev-parse HEAD)
DATE=$(git log -1 --format=%cI)
export SOURCE_DATE_EPOCH
LDFLAGS="-s -w -buildid= -X main.version=$VERSION -X main.commit=$COMMIT -X main.date=$DATE"
TOOL=("$GO" tool -modfile=tools/go.mod)

rm -rf "$OUT"
mkdir -p "$OUT/build/pkg"
umask 022

# The packaged configuration: data under /var/lib/pipelined (the unit's
# StateDirectory), the schema beside the file in /etc/pipelined/schemas
# (as examples/systemd/README.md step 2 does it).
sed -e 's|"data/|"/var/lib/pipelined/data/|' -e 's|"examples/callkaro/schemas/|"schemas/|' \
	pipeline.toml >"$OUT/build/pkg/pipeline.toml"
# The packaged unit: /usr/bin instead of /usr/local/bin; the example
# credential is commented out (a missing file would fail the start: the
# packaged configuration has no secret).
sed -e 's|/usr/local/bin/|/usr/bin/|g' -e 's|^LoadCredential=|#LoadCredential=|' \
	examples/systemd/pipelined.service >"$OUT/build/pkg/pipelined.service"
grep -q /usr/local "$OUT/build/pkg/pipelined.service" && { echo "dist: /usr/local left in the unit" >&2; exit 1; }
cat >"$OUT/build/pkg/copyright" <<EOT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pipelined
Source: https://github.com/pipelined/pipelined

Files: *
Copyright: pipelined authors
License: MIT

License: MIT
$(sed -e 's/^$/./' -e 's/^/ /' LICENSE | tail -n +3)
EOT

# Debian wants a changelog; one entry per release, dated by the commit.
{
	echo "pipelined ($VERSION-1) unstable; urgency=medium"
	echo
	echo "  * Release $VERSION (commit $COMMIT)."
	echo
	echo " -- pipelined authors <pipelined@users.noreply.github.com>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -n -9 >"$OUT/build/pkg/changelog.Debian.gz"

for arch in $ARCHES; do
	stage=$OUT/build/linux_$arch
	mkdir -p "$stage"
	echo "dist: building linux/$arch"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -buildvcs=false -ldflags "$LDFLAGS" \
		-o "$stage/pipelined" ./cmd/pipelined
	for p in $PLUGINS; do
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -buildvcs=false -ldflags "$LDFLAGS" \
			-o "$stage/pipelined-sink-$p" ./cmd/pipelined-sink-$p
	done

	# SBOM per binary, from the module information Go embeds in it.
	for b in pipelined $(for p in $PLUGINS; do echo pipelined-sink-$p; done); do
		"${TOOL[@]}" cyclonedx-gomod bin -json -noserial -notimestamp -version "v$VERSION" \
			-output "$OUT/${b}_${VERSION}_linux_${arch}.cdx.json" "$stage/$b"
	done

	# Tarball: the binaries side by side (the daemon finds its plugins next
	# to itself), the reference configuration with the schema where it
	# points, the unit as examples/systemd/README.md installs it, and its
	# socket units and drop-in for socket activation.
	name=pipelined_${VERSION}_linux_${arch}
	t=$OUT/build/tar/$name
	mkdir -p "$t/examples/callkaro/schemas"
	install -m 0755 "$stage"/pipelined* "$t/"
	install -m 0644 pipeline.toml README.md LICENSE examples/systemd/pipelined.service \
		examples/systemd/pipelined.socket examples/systemd/pipelined-admin.socket examples/systemd/socket-activation.conf "$t/"
	install -m 0644 examples/callkaro/schemas/call_ended.schema.json "$t/examples/callkaro/schemas/"
	find "$t" -type d -exec chmod 0755 {} +
	tar -C "$OUT/build/tar" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
		--format=gnu -cf - "$name" | gzip -n -9 >"$OUT/$name.tar.gz"

	# .deb and .rpm.
	for pkg in deb rpm; do
		VERSION=$VERSION ARCH=$arch STAGE=$stage PKG=$OUT/build/pkg "${TOOL[@]}" nfpm package \
			--config packaging/nfpm.yaml --packager "$pkg" --target "$OUT/" >/dev/null
	done
done

rm -rf "$OUT/build"
(cd "$OUT" && sha256sum -- * >SHA256SUMS)
echo "dist: $(wc -l <"$OUT/SHA256SUMS") artifacts in $OUT/"
(cd "$OUT" && ls -l)
