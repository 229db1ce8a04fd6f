#!/usr/bin/env bash
# Demo: build an image in code, push it to a local registry, convert it to eStargz with
# estargz-convert, check the TOC digests with the reference ctr-remote, then pull it lazily
# through estargz-snapshotter (containerd proxy plugin "stargz") and run it: the layers are
# mounted through FUSE and only the bytes the container reads come from the registry.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh

bash scripts/install-deps.sh

log "build release binaries"
cargo build --release -p estargz-convert -p estargz-snapshotter
cargo build --release -p testkit --example make-image
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
CONVERT=$TARGET/estargz-convert
SNAPSHOTTER=$TARGET/estargz-snapshotter
MAKE_IMAGE=$TARGET/examples/make-image

WORK=$(mktemp -d /tmp/esgz-demo.XXXXXX)
trap cleanup EXIT

log "start docker-registry, estargz-snapshotter and containerd under $WORK"
start_registry
mkdir -p "$WORK/snapshotter"
SNAPSHOTTER_SOCK=$WORK/snapshotter/snapshotter.sock
cat >"$WORK/snapshotter/config.toml" <<TOML
root = "$WORK/snapshotter/root"
address = "$SNAPSHOTTER_SOCK"
[remote]
plain_http = ["$REGISTRY"]
# Off so that the served-bytes figure below is what the container read, not the
# rest of the layers that background fetching would bring in afterwards.
[background_fetch]
enable = false
TOML
"$SNAPSHOTTER" --config "$WORK/snapshotter/config.toml" >"$WORK/snapshotter/log" 2>&1 &
SNAPSHOTTER_PID=$!
wait_for 30 "snapshotter socket" test -S "$SNAPSHOTTER_SOCK" ||
  { tail -20 "$WORK/snapshotter/log"; die "estargz-snapshotter did not start"; }
start_containerd "[proxy_plugins]
  [proxy_plugins.stargz]
    type = \"snapshot\"
    address = \"$SNAPSHOTTER_SOCK\""
echo "registry: $REGISTRY   snapshotter: $SNAPSHOTTER_SOCK   containerd: $CONTAINERD_SOCK"

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

log "reference check: ctr-remote image get-toc-digest equals our annotation (after a normal pull)"
ctr_remote image pull --plain-http "$DST" >/dev/null
jq -r '.layers[] | [.digest, (.annotations["containerd.io/snapshot/stargz/toc.digest"] // "")] | @tsv' \
  <<<"$manifest" | while IFS=$'\t' read -r digest toc; do
    theirs=$(ctr_remote image get-toc-digest "$digest")
    [[ "$theirs" == "$toc" ]] || die "layer $digest: ctr-remote says $theirs, annotation says $toc"
    echo "$digest ok"
  done

log "lazy pull: ctr-remote image rpull --snapshotter stargz $DST (namespace lazy)"
lazy() { /usr/bin/ctr --address "$CONTAINERD_SOCK" --namespace lazy "$@"; }
log_lines_before=$(wc -l <"$WORK/registry/log")
/usr/bin/ctr-remote --address "$CONTAINERD_SOCK" --namespace lazy \
  image rpull --plain-http --snapshotter stargz "$DST" >/dev/null
echo "FUSE mounts of lazily pulled layers:"
grep -c " fuse.estargz " /proc/self/mountinfo || die "no layer is mounted through FUSE"
lazy snapshots --snapshotter stargz ls
remote=$(lazy snapshots --snapshotter stargz ls | awk 'NR > 1 && $NF == "Committed" { print $1 }' |
  while read -r key; do lazy snapshots --snapshotter stargz info "$key"; done |
  grep -c '"containerd.io/snapshot/remote": "remote snapshot"' || true)
echo "committed snapshots labelled remote: $remote"
[[ "$remote" -gt 0 ]] || die "no snapshot was mounted lazily (see $WORK/snapshotter/log)"

log "run it: ctr run --snapshotter stargz --rm $DST"
output=$(lazy run --rm --snapshotter stargz "$DST" demo-run)
echo "$output"
grep -q "hello from an estargz image" <<<"$output" || die "unexpected container output"

total=$(jq '[.layers[].size] | add' <<<"$manifest")
served=$(tail -n +"$((log_lines_before + 1))" "$WORK/registry/log" |
  grep '"GET /v2/demo/blobs/' | sed -n 's/.*HTTP\/1.1" [0-9]* \([0-9]*\) .*/\1/p' |
  awk '{ s += $1 } END { print s + 0 }')
echo "registry served $served of $total layer bytes for the lazy pull and run"

log "demo finished"
