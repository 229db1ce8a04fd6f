#!/usr/bin/env bash
# Demo: build an image in code, push it to a local registry, convert it to eStargz with
# estargz-convert, show the converted layers, then pull and run it with containerd.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh

bash scripts/install-deps.sh

log "build release binaries"
cargo build --release -p estargz-convert
cargo build --release -p testkit --example make-image
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
CONVERT=$TARGET/estargz-convert
MAKE_IMAGE=$TARGET/examples/make-image

WORK=$(mktemp -d /tmp/esgz-demo.XXXXXX)
trap cleanup EXIT

log "start docker-registry and containerd under $WORK"
start_registry
start_containerd
echo "registry: $REGISTRY   containerd: $CONTAINERD_SOCK"

SRC=$REGISTRY/demo:v1
DST=$REGISTRY/demo:esgz

log "build a busybox image in code and push it as $SRC"
"$MAKE_IMAGE" push "$REGISTRY" demo:v1 demo

log "convert: estargz-convert $SRC $DST --plain-http"
"$CONVERT" "$SRC" "$DST" --plain-http

log "converted layers"
manifest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$REGISTRY/v2/demo/manifests/esgz")
printf '%-73s %10s  %s\n' "LAYER DIGEST" "SIZE" "TOC DIGEST"
jq -r '.layers[] | [.digest, (.size|tostring),
  (.annotations["containerd.io/snapshot/stargz/toc.digest"] // "-")] | @tsv' <<<"$manifest" |
  while IFS=$'\t' read -r digest size toc; do printf '%-73s %10s  %s\n' "$digest" "$size" "$toc"; done

log "pull $DST with ctr-remote"
ctr_remote image pull --plain-http "$DST" >/dev/null

log "check TOC digests with ctr-remote image get-toc-digest"
jq -r '.layers[] | [.digest, (.annotations["containerd.io/snapshot/stargz/toc.digest"] // "")] | @tsv' \
  <<<"$manifest" | while IFS=$'\t' read -r digest toc; do
    theirs=$(ctr_remote image get-toc-digest "$digest")
    [[ "$theirs" == "$toc" ]] || die "layer $digest: ctr-remote says $theirs, annotation says $toc"
    echo "$digest ok"
  done

log "run it: ctr run --rm $DST"
output=$(ctr_ run --rm "$DST" demo-run)
echo "$output"
grep -q "hello from an estargz image" <<<"$output" || die "unexpected container output"

log "demo finished"
