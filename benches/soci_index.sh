#!/usr/bin/env bash
# zTOC build cost, in one run: the time to index a gzip layer (one streaming pass:
# inflate, tar headers, checkpoints, span digests) against `gzip -dc` over the same
# layer (the one-pass floor), and the index size against the layer size.
#
# The layer is a gzip (level 6) tar of real files from this machine: DIRS (default
# "usr/share/doc usr/include usr/bin"), many small files and some large ones.
# Each command runs RUNS times (default 3); the best time counts.
#
# Env: DIRS, RUNS, LAYER (use this .tar.gz instead of building one).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DIRS=${DIRS:-"usr/share/doc usr/include usr/bin"}
RUNS=${RUNS:-3}
cargo build --release -q -p estargz --example soci_index
INDEX=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/soci_index

WORK=$(mktemp -d /tmp/soci-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
LAYER=${LAYER:-}
if [[ -z $LAYER ]]; then
    LAYER=$WORK/layer.tar.gz
    # shellcheck disable=SC2086
    tar -C / -cf - $DIRS 2>/dev/null | gzip -6 > "$LAYER"
fi

best() { # best wall seconds of RUNS runs of "$@" (stdout discarded)
    local best=""
    for _ in $(seq "$RUNS"); do
        local t0 t1 s
        t0=$(date +%s.%N)
        "$@" > /dev/null
        t1=$(date +%s.%N)
        s=$(echo "$t1 - $t0" | bc -l)
        if [[ -z $best ]] || (( $(echo "$s < $best" | bc -l) )); then best=$s; fi
    done
    echo "$best"
}

gz=$(best gzip -dc "$LAYER")
idx=$(best "$INDEX" "$LAYER")
line=$("$INDEX" "$LAYER")
layer_bytes=$(stat -c %s "$LAYER")
ztoc_bytes=$(echo "$line" | sed -E 's/.*"ztoc_bytes": ([0-9]+).*/\1/')
spans=$(echo "$line" | sed -E 's/.*"spans": ([0-9]+).*/\1/')
index_bytes=$(echo "$line" | sed -E 's/.*"index_bytes": ([0-9]+).*/\1/')
points=$(echo "$line" | sed -E 's/.*"points": ([0-9]+).*/\1/')
files=$(echo "$line" | sed -E 's/.*"files": ([0-9]+).*/\1/')

printf '%-28s %12s\n' "layer (gzip -6)" "$(( layer_bytes / 1048576 )) MiB, $files files"
printf '%-28s %12.2f s\n' "gzip -dc (floor)" "$gz"
printf '%-28s %12.2f s\n' "index build" "$idx"
printf '%-28s %12.2f x\n' "build / gzip -dc" "$(echo "$idx / $gz" | bc -l)"
printf '%-28s %12s\n' "zTOC size" "$ztoc_bytes bytes, $spans spans"
printf '%-28s %12.2f %%\n' "zTOC / layer" "$(echo "100 * $ztoc_bytes / $layer_bytes" | bc -l)"
printf '%-28s %12s\n' "whole index" "$index_bytes bytes, $points resume points"
printf '%-28s %12.2f %%\n' "whole index / layer" "$(echo "100 * $index_bytes / $layer_bytes" | bc -l)"
