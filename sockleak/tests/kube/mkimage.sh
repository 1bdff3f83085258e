#!/bin/sh
# mkimage.sh NAME OUT.tar BINARY [ARGS...]
# Writes an OCI image-layout archive (no registry, no docker, no podman) whose single layer holds
# BINARY as /<basename>, with Entrypoint ["/<basename>", ARGS...]. NAME is the full reference,
# e.g. localhost/sockleak/pause:test; `ctr -n k8s.io images import OUT.tar` registers it under it.
set -eu
name=$1 out=$2 bin=$3; shift 3
base=$(basename "$bin")
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
mkdir -p "$w/rootfs" "$w/img/blobs/sha256"
cp "$bin" "$w/rootfs/$base"; chmod 0755 "$w/rootfs/$base"
# Reproducible layer: fixed owner and mtime, sorted.
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$w/rootfs" -cf "$w/layer.tar" .
blob() { # file mediatype -> writes blob, prints descriptor JSON
  d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$w/img/blobs/sha256/$d"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$d" "$s"
}
layer=$(blob "$w/layer.tar" application/vnd.oci.image.layer.v1.tar)
diffid=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
ep="\"/$base\""; for a in "$@"; do ep="$ep,\"$a\""; done
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":[%s],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$ep" "$diffid" > "$w/config.json"
config=$(blob "$w/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
  "$config" "$layer" > "$w/manifest.json"
manifest=$(blob "$w/manifest.json" application/vnd.oci.image.manifest.v1+json)
tag=${name##*:}
printf '{"schemaVersion":2,"manifests":[%s]}' \
  "$(echo "$manifest" | sed "s|}\$|,\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"$tag\"}}|")" \
  > "$w/img/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$w/img/oci-layout"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$w/img" -cf "$out" oci-layout index.json blobs
echo "$out: $name ($(stat -c %s "$out") bytes)"
