#!/usr/bin/env bash
# End-to-end conversion benchmark: the same image converted by the reference
# (`ctr-remote image convert --estargz --oci`) and by `estargz-convert`, in one run.
#
# The image (busybox + several layers, about SIZE_MIB MiB of content: many small text files,
# medium mixed files, a few big mostly-binary files) is built in code by testkit.
#
# What is measured (GNU time -v around one command each):
# - reference: the `ctr-remote image convert` client process. It converts client-side and
#   streams blobs through containerd's content API, so containerd's CPU time during the
#   convert is measured separately (from /proc/<pid>/stat) and added in the "+containerd" row.
#   containerd's peak RSS is not attributable to the convert and is not counted.
# - ours: `estargz-convert oci:IN:v1 oci:OUT:esgz` from one OCI layout dir to another
#   (the same input bytes, no network; the reference reads from containerd's local store).
#
# Env: SIZE_MIB (default 300), LEVEL gzip level (default 9, ctr-remote's default),
#      CHUNK chunk size in bytes (default 4194304, both tools' default).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh

SIZE_MIB=${SIZE_MIB:-300}
LEVEL=${LEVEL:-9}
CHUNK=${CHUNK:-4194304}
TIME=/usr/bin/time
[[ -x $TIME ]] || die "$TIME missing: run scripts/install-deps.sh (package time)"

log "build release binaries"
cargo build --release -q -p estargz-convert
cargo build --release -q -p testkit --example make-image
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
CONVERT=$TARGET/estargz-convert
MAKE_IMAGE=$TARGET/examples/make-image

WORK=$(mktemp -d /tmp/esgz-bench.XXXXXX)
trap cleanup EXIT
start_registry
start_containerd

log "build the ${SIZE_MIB} MiB benchmark image (registry and OCI layout, same bytes)"
"$MAKE_IMAGE" push "$REGISTRY" bench:v1 "bench:$SIZE_MIB" >/dev/null
"$MAKE_IMAGE" layout "$WORK/in" v1 "bench:$SIZE_MIB" >/dev/null
in_manifest=$(jq -r '.manifests[0].digest' "$WORK/in/index.json")
pushed=$(curl -sf -o /dev/null -w '%header{docker-content-digest}' \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REGISTRY/v2/bench/manifests/v1")
[[ "$in_manifest" == "$pushed" ]] || die "layout $in_manifest != pushed $pushed"
in_bytes=$(jq '[.layers[].size] | add' "$WORK/in/blobs/sha256/${in_manifest#sha256:}")
echo "input: $in_manifest, $(jq '.layers | length' "$WORK/in/blobs/sha256/${in_manifest#sha256:}") layers, $in_bytes bytes compressed"

log "reference: pull into containerd (not timed)"
ctr_remote image pull --plain-http "$REGISTRY/bench:v1" >/dev/null

# cpu_ticks PID: utime+stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

# parse_time FILE: "wall_s cpu_s rss_kib" from GNU time -v output.
parse_time() {
  awk -F': ' '
    /User time/ { user = $2 } /System time/ { sys = $2 }
    /Maximum resident/ { rss = $2 }
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); wall = 0; for (i = 1; i <= n; i++) wall = wall * 60 + p[i] }
    END { printf "%.2f %.2f %d\n", wall, user + sys, rss }' "$1"
}

log "reference: ctr-remote image convert --estargz --oci (timed)"
before=$(cpu_ticks "$CONTAINERD_PID")
$TIME -v -o "$WORK/time-ref" /usr/bin/ctr-remote --address "$CONTAINERD_SOCK" --namespace demo \
  image convert --estargz --oci --estargz-compression-level "$LEVEL" --estargz-chunk-size "$CHUNK" \
  "$REGISTRY/bench:v1" "$REGISTRY/bench:ref" >/dev/null
after=$(cpu_ticks "$CONTAINERD_PID")
containerd_cpu=$(awk -v a="$after" -v b="$before" -v t="$TICKS" 'BEGIN { printf "%.2f", (a - b) / t }')
ctr_remote image push --plain-http "$REGISTRY/bench:ref" >/dev/null
ref_bytes=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$REGISTRY/v2/bench/manifests/ref" | jq '[.layers[].size] | add')

log "ours: estargz-convert oci:in:v1 oci:out:esgz (timed)"
$TIME -v -o "$WORK/time-ours" "$CONVERT" "oci:$WORK/in:v1" "oci:$WORK/out:esgz" \
  --compression-level "$LEVEL" --chunk-size "$CHUNK" >/dev/null
out_manifest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "esgz") | .digest' "$WORK/out/index.json")
our_bytes=$(jq '[.layers[].size] | add' "$WORK/out/blobs/sha256/${out_manifest#sha256:}")

read -r ref_wall ref_cpu ref_rss < <(parse_time "$WORK/time-ref")
read -r our_wall our_cpu our_rss < <(parse_time "$WORK/time-ours")
ref_total_cpu=$(awk -v a="$ref_cpu" -v b="$containerd_cpu" 'BEGIN { printf "%.2f", a + b }')

log "results (${SIZE_MIB} MiB image, gzip level $LEVEL, chunk $CHUNK, $(nproc) cores)"
row() { printf '%-28s %9s %12s %14s %14s\n' "$@"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
row "converter" "wall s" "cpu s" "peak RSS MiB" "output MiB"
row "ctr-remote (client)" "$ref_wall" "$ref_cpu" "$(mib $((ref_rss * 1024)))" "$(mib "$ref_bytes")"
row "ctr-remote +containerd cpu" "$ref_wall" "$ref_total_cpu" "-" "-"
row "estargz-convert" "$our_wall" "$our_cpu" "$(mib $((our_rss * 1024)))" "$(mib "$our_bytes")"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
row "ours / reference" "$(ratio "$our_wall" "$ref_wall")" "$(ratio "$our_cpu" "$ref_total_cpu")" \
  "$(ratio "$our_rss" "$ref_rss")" "$(ratio "$our_bytes" "$ref_bytes")"
echo "(cpu ratio is against ctr-remote + containerd; RSS ratio against the ctr-remote client only)"

# Peak RSS must not grow with layer size: convert a larger image with ours only.
BIG_MIB=${BIG_MIB:-$((SIZE_MIB * 4))}
if [[ "$BIG_MIB" -gt 0 ]]; then
  log "ours on a ${BIG_MIB} MiB image (peak RSS vs size)"
  "$MAKE_IMAGE" layout "$WORK/big" v1 "bench:$BIG_MIB" >/dev/null
  $TIME -v -o "$WORK/time-big" "$CONVERT" "oci:$WORK/big:v1" "oci:$WORK/big-out:esgz" \
    --compression-level "$LEVEL" --chunk-size "$CHUNK" >/dev/null
  read -r big_wall big_cpu big_rss < <(parse_time "$WORK/time-big")
  rm -rf "$WORK/big" "$WORK/big-out"
  row "estargz-convert, input MiB" "wall s" "cpu s" "peak RSS MiB" ""
  row "$SIZE_MIB" "$our_wall" "$our_cpu" "$(mib $((our_rss * 1024)))" ""
  row "$BIG_MIB" "$big_wall" "$big_cpu" "$(mib $((big_rss * 1024)))" ""
fi
