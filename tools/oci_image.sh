#!/usr/bin/env bash
# Builds Peregrine's OCI image with umoci (Debian's), deterministically:
#   tools/oci_image.sh BINARY IMAGE_DIR LAYOUT_OUT ARCHIVE_OUT
# IMAGE_DIR holds peregrine.toml, passwd, group and nsswitch.conf. The
# root file system is staged from the binary, the shared libraries `ldd`
# finds for it (Debian's, the ones the build linked), CA certificates and
# tzdata; every mtime is the epoch and every owner root but the data
# directory (peregrine, 1000:1000). umoci writes the layer and the config
# (history and creation time fixed), and the archive is the layout in a
# tar with sorted names and fixed owners and times: the same inputs give
# the same digests. Needs root (the layer records owners).
set -euo pipefail
binary=$1 image=$2 layout=$3 archive=$4
if [[ $(id -u) -ne 0 ]]; then
  echo "oci_image: build the image as root: its layer records file owners" >&2
  exit 1
fi
for tool in umoci tar; do
  command -v "$tool" >/dev/null || {
    echo "oci_image: $tool is missing (scripts/install-deps.sh installs it)" >&2
    exit 1
  }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
install -D -m 0755 "$binary" "$root/usr/local/bin/peregrine"
# The dynamic loader and every library, at the paths the binary asks for.
ldd "$binary" | awk '/=> \//{print $3} $1 ~ /^\//{print $1}' |
  sort -u | while read -r lib; do
    real=$(readlink -f "$lib")
    install -D -m 0755 "$real" "$root$lib"
  done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt \
  "$root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$root/usr/share"
cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"
install -D -m 0644 "$image/peregrine.toml" "$root/etc/peregrine/peregrine.toml"
for f in passwd group nsswitch.conf; do
  install -D -m 0644 "$image/$f" "$root/etc/$f"
done
install -d -m 1777 "$root/tmp"
install -d -m 0750 "$root/var/lib/peregrine"
find "$root" -exec chown -h 0:0 {} +
chown 1000:1000 "$root/var/lib/peregrine"
find "$root" -exec touch -h -d @0 {} +

rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:peregrine"
umoci insert --image "$layout:peregrine" \
  --history.created 1970-01-01T00:00:00Z \
  --history.created_by "tools/oci_image.sh" "$root" / 2>/dev/null
umoci config --image "$layout:peregrine" --no-history \
  --created 1970-01-01T00:00:00Z \
  --config.user 1000:1000 \
  --config.workingdir /var/lib/peregrine \
  --config.entrypoint /usr/local/bin/peregrine \
  --config.cmd serve --config.cmd --config \
  --config.cmd /etc/peregrine/peregrine.toml \
  --config.exposedports 2525/tcp --config.exposedports 2587/tcp \
  --config.exposedports 2465/tcp --config.exposedports 8025/tcp \
  --config.volume /var/lib/peregrine \
  --config.stopsignal SIGTERM \
  --config.env TZ=UTC \
  --config.label org.opencontainers.image.title=peregrine \
  --config.label "org.opencontainers.image.description=Peregrine mail transfer agent" \
  --config.label org.opencontainers.image.licenses=Apache-2.0 \
  --manifest.annotation org.opencontainers.image.ref.name=peregrine
umoci gc --layout "$layout"
find "$layout" -exec touch -h -d @0 {} +
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$layout" -cf "$archive" .
