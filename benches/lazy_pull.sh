#!/usr/bin/env bash
# End-to-end lazy-pull benchmark (issues 4 and 5, "Speed"): time until a large image's container
# is ready, and bytes fetched from the registry, for
#   overlayfs   the original gzip image: `ctr image pull` (containerd's built-in overlayfs
#               snapshotter: everything downloaded and unpacked), then `ctr run`;
#   esgz        the image converted by estargz-convert without prioritized files:
#               `ctr-remote image rpull --snapshotter stargz`, then `ctr run` (lazy);
#   esgz-prio   converted with --prioritized-files (the entrypoint's files, in reading
#               order, placed first and prefetched at mount), rpull + run as above;
#   esgz-recorded the esgz image run once (loopback, fresh daemon with `[record] enable =
#               true`), then converted again with `estargz-convert --record-from` the
#               daemon's record directory: the files that run opened come first in each
#               layer and are prefetched at mount; rpull + run as above.
#
# The image (testkit preset lazy-bench:SIZE_MIB: busybox plus three data layers of mostly
# incompressible files) has an entrypoint that `cat`s about a tenth of the content
# (a big, a medium and 16 small files per data layer, interleaved with the other files)
# and then prints "ready". Time to ready runs from the start of the pull to the moment
# that line appears on `ctr run`'s output.
#
# Links, each used for RUNS rounds of the three cases (fresh containerd, daemon root and
# cache for every measured run):
#   shaped    docker-registry in its own network namespace behind a veth pair shaped
#             with tbf at RATE in both directions, reached through testkit's delay-proxy
#             (on 127.0.0.1), which delays each direction by DELAY_MS (so RTT +2*DELAY_MS);
#   loopback  docker-registry on 127.0.0.1, no shaping and no delay.
# Only 127.0.0.0/8 and the namespace's /30 (NET.1 host side, NET.2 namespace side) are
# used; the namespace, veth, qdiscs, processes and temp dirs are removed on exit.
#
# Reported per link and case: median time to ready, registry bytes (sum of the byte
# counts of blob GETs in the registry's access log), and the lower bound: the compressed
# bytes of the chunks the entrypoint reads (from the image's TOCs) divided by the link
# bandwidth (curl downloading a big blob over the same path) plus the start time with
# everything local (the `ctr run` part of the overlayfs runs: image pulled and unpacked).
# Targets: esgz <= 1.15x (shaped) / 1.5x local (loopback); esgz-prio <= 1.05x / 1.5x local
# and bytes <= 1.05x needed; esgz-recorded faster than esgz (issue 5).
#
# Env: SIZE_MIB image content in MiB (default 400), RUNS rounds per link (default 3),
#      RATE tbf rate (default 100mbit), DELAY_MS proxy delay per direction (default 10),
#      LINKS links to run (default "shaped loopback"), LOG_LEVEL daemon log level
#      (default info), LOGS_DIR if set, each run's daemon log and registry lines are
#      copied there, NET the /30 prefix (default 10.231.7), CASES the cases to measure
#      (default all four; keep overlayfs: it gives the local start of the lower bound),
#      DAEMON_CONFIG extra TOML for the daemon's config in measured runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh
source benches/lib.sh

SIZE_MIB=${SIZE_MIB:-400}
RUNS=${RUNS:-3}
RATE=${RATE:-100mbit}
DELAY_MS=${DELAY_MS:-10}
LINKS=${LINKS:-shaped loopback}
LOG_LEVEL=${LOG_LEVEL:-info}
LOGS_DIR=${LOGS_DIR:-}
NET=${NET:-10.231.7}
ALL_CASES=(overlayfs esgz esgz-prio esgz-recorded)
read -r -a CASES <<<"${CASES:-${ALL_CASES[*]}}"
DAEMON_CONFIG=${DAEMON_CONFIG:-}
declare -A TAG=([overlayfs]=v1 [esgz]=esgz [esgz-prio]=esgz-prio [esgz-recorded]=esgz-rec)

bench_init lazy

# run_until_ready SNAPSHOTTER_ARGS...: `ctr run` the image $REF; prints when "ready" appeared.
run_until_ready() {
  rm -f "$WORK/ready-at"
  ctr_ run --rm "$@" "$REF" bench | while IFS= read -r line; do
    echo "$line" >>"$WORK/run-output"
    [[ "$line" == ready ]] && now >"$WORK/ready-at"
  done
  [[ -s "$WORK/ready-at" ]] || { cat "$WORK/run-output"; die "no ready line from $REF"; }
  cat "$WORK/ready-at"
}

# measure LINK CASE ROUND: one measured run; appends a line to $WORK/results.
measure() {
  local link=$1 case=$2 round=$3 start pulled ready bytes requests
  REF=$REG/lazy:${TAG[$case]}
  start_stack "$DAEMON_CONFIG"
  : >"$WORK/run-output"
  local first_line=$(($(wc -l <"$REG_LOG") + 1))
  start=$(now)
  if [[ "$case" == overlayfs ]]; then
    ctr_ image pull --plain-http "$REF" >/dev/null
    pulled=$(now)
    ready=$(run_until_ready)
  else
    ctr_remote image rpull --plain-http --snapshotter stargz "$REF" >/dev/null
    pulled=$(now)
    ready=$(run_until_ready --snapshotter stargz)
    local fuse
    fuse=$(awk -v root="$WORK/run/" 'index($5, root) == 1 && / - fuse(\.estargz)? estargz / { n++ } END { print n + 0 }' \
      /proc/self/mountinfo)
    [[ "$fuse" -ge 4 ]] || { tail -20 "$WORK/run/snapshotter/log"; die "$case: only $fuse FUSE layer mounts"; }
  fi
  sleep 1 # the registry logs a request when it is done
  read -r bytes requests < <(blob_gets "$REG_LOG" "$first_line")
  if [[ -n "$LOGS_DIR" ]]; then
    mkdir -p "$LOGS_DIR"
    cp "$WORK/run/snapshotter/log" "$LOGS_DIR/$link-$case-$round.daemon.log"
    tail -n +"$first_line" "$REG_LOG" >"$LOGS_DIR/$link-$case-$round.registry.log"
  fi
  stop_stack
  local to_ready run_part
  to_ready=$(calc "$ready - $start")
  run_part=$(calc "$ready - $pulled")
  printf '%-9s %-10s round %d: ready after %6ss (pull %6ss, run %6ss), %7s MB in %d blob GETs\n' \
    "$link" "$case" "$round" "$to_ready" "$(calc "$pulled - $start")" "$run_part" "$(mb "$bytes")" "$requests"
  echo "$link $case $round $to_ready $run_part $bytes $requests" >>"$WORK/results"
}

# needed_bytes TAG: compressed bytes of the chunks of the read-set files in image TAG
# (from each layer's footer and TOC): what the entrypoint needs from the registry.
needed_bytes() {
  local manifest total=0 digest url toc_offset n
  manifest=$(manifest lazy "$1")
  for digest in $(jq -r '.layers[].digest' <<<"$manifest"); do
    url=http://$LOOP_REG/v2/lazy/blobs/$digest
    toc_offset=$((16#$(curl -sf -r -51 "$url" | dd bs=1 skip=16 count=16 2>/dev/null)))
    n=$(curl -sf -r "$toc_offset-" "$url" | tar -xzO stargz.index.json 2>/dev/null |
      jq --rawfile list "$WORK/read-set.txt" --argjson toc "$toc_offset" '
        ($list | split("\n") | map(select(. != "") | {(.): true}) | add) as $read
        | ([.entries[] | .offset // 0 | select(. > 0)] + [$toc] | unique) as $starts
        | [.entries[] | select((.type == "reg" or .type == "chunk") and (.offset // 0) > 0
                               and $read[.name])
           | .offset as $o | ($starts | map(select(. > $o)) | min) - $o]
        | add // 0')
    total=$((total + n))
  done
  echo "$total"
}

# bandwidth: bytes/s of curl downloading the biggest blob of the original image from $REG.
bandwidth() {
  local digest
  digest=$(manifest lazy v1 | jq -r '.layers | max_by(.size) | .digest')
  download_speed "http://$REG/v2/lazy/blobs/$digest"
}

# record_run: runs the esgz image once on loopback with a fresh daemon recording the files
# it opens, then converts it with --record-from that record into lazy:esgz-rec.
record_run() {
  REG=$LOOP_REG REF=$LOOP_REG/lazy:esgz
  start_stack "[record]
enable = true"
  : >"$WORK/run-output"
  ctr_remote image rpull --plain-http --snapshotter stargz "$REF" >/dev/null
  run_until_ready --snapshotter stargz >/dev/null
  stop_stack "$WORK/record"
  echo "recorded $(cat "$WORK"/record/*.jsonl | wc -l) file opens in $(ls "$WORK/record" | wc -l) record file(s)"
  "$CONVERT" "$LOOP_REG/lazy:esgz" "$LOOP_REG/lazy:esgz-rec" --plain-http --no-progress \
    --record-from "$WORK/record" 2>/dev/null
}

start_registry
LOOP_REG=$REGISTRY

log "build the ${SIZE_MIB} MiB lazy-bench image, convert it twice, record a run, convert from the record"
"$MAKE_IMAGE" push "$LOOP_REG" lazy:v1 "lazy-bench:$SIZE_MIB" >/dev/null
"$MAKE_IMAGE" read-set "$SIZE_MIB" >"$WORK/read-set.txt"
"$CONVERT" "$LOOP_REG/lazy:v1" "$LOOP_REG/lazy:esgz" --plain-http --no-progress 2>/dev/null
"$CONVERT" "$LOOP_REG/lazy:v1" "$LOOP_REG/lazy:esgz-prio" --plain-http --no-progress \
  --prioritized-files "$WORK/read-set.txt" 2>/dev/null
record_run
declare -A IMAGE_BYTES NEEDED
for case in "${ALL_CASES[@]}"; do
  IMAGE_BYTES[$case]=$(manifest lazy "${TAG[$case]}" | jq '[.layers[].size] | add')
  [[ $case == overlayfs ]] || NEEDED[$case]=$(needed_bytes "${TAG[$case]}")
done
NEEDED[overlayfs]=${NEEDED[esgz]}
read_files=$(wc -l <"$WORK/read-set.txt")
echo "image layers: overlayfs $(mb "${IMAGE_BYTES[overlayfs]}") MB (gzip), esgz $(mb "${IMAGE_BYTES[esgz]}") MB, esgz-prio $(mb "${IMAGE_BYTES[esgz-prio]}") MB, esgz-recorded $(mb "${IMAGE_BYTES[esgz-recorded]}") MB"
echo "entrypoint reads $read_files files: ${NEEDED[esgz]} bytes of chunks (esgz), ${NEEDED[esgz-prio]} (esgz-prio), ${NEEDED[esgz-recorded]} (esgz-recorded)"

: >"$WORK/results"
declare -A BW
for link in $LINKS; do
  case $link in
    shaped)
      log "shaped link: registry in netns $NS at $NET.2:5000, tbf $RATE both ways, +${DELAY_MS} ms each way"
      setup_shaped_link ;;
    loopback)
      log "loopback link: registry at $LOOP_REG"
      REG=$LOOP_REG REG_LOG=$WORK/registry/log ;;
    *) die "unknown link $link" ;;
  esac
  BW[$link]=$(bandwidth)
  echo "bandwidth (curl, one blob): $(calc "${BW[$link]} * 8 / 1e6" 1) Mbit/s"
  for round in $(seq 1 "$RUNS"); do
    for case in "${CASES[@]}"; do measure "$link" "$case" "$round"; done
  done
  [[ $link == shaped ]] && teardown_shaped_link
done

field() { awk -v l="$1" -v c="$2" -v f="$3" '$1 == l && $2 == c { print $f }' "$WORK/results" | median; }

# check TARGET VALUE LIMIT [OP]: records a target and whether VALUE OP LIMIT (default <=).
check() { targets+=("$1"); met+=("$(awk "BEGIN { print ($2 ${4:-<=} $3) ? \"yes\" : \"no\" }")"); }

log "results (${SIZE_MIB} MiB image, median of $RUNS runs, $(nproc) cores)"
echo "| link | case | time to ready s | registry MB | needed MB | lower bound s | vs lower bound | vs local | target | met? |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---|---|"
for link in $LINKS; do
  local_s=$(field "$link" overlayfs 5)
  for case in "${CASES[@]}"; do
    t=$(field "$link" "$case" 4)
    bytes=$(field "$link" "$case" 6)
    lower=$(calc "${NEEDED[$case]} / ${BW[$link]} + $local_s")
    vs_lower=$(calc "$t / $lower" 2)
    vs_local=$(calc "$t / $local_s" 2)
    vs_needed=$(calc "$bytes / ${NEEDED[$case]}" 2)
    targets=() met=()
    case "$link/$case" in
      shaped/esgz) check "time <= 1.15x lower" "$vs_lower" 1.15 ;;
      shaped/esgz-prio) check "time <= 1.05x lower" "$vs_lower" 1.05 ;;
      loopback/esgz) check "time <= 1.5x local" "$vs_local" 1.5 ;;
      loopback/esgz-prio) check "time <= 1.5x local" "$vs_local" 1.5 ;;
      */esgz-recorded) check "time < esgz ($(field "$link" esgz 4) s)" "$t" "$(field "$link" esgz 4)" "<" ;;
    esac
    [[ $case == esgz-prio || $case == esgz-recorded ]] && check "bytes <= 1.05x needed (${vs_needed}x)" "$vs_needed" 1.05
    target=$(IFS=';'; echo "${targets[*]:--}") ok=$(IFS=';'; echo "${met[*]:--}")
    echo "| $link | $case | $t | $(mb "$bytes") | $(mb "${NEEDED[$case]}") | $lower | ${vs_lower} | ${vs_local} | ${target//;/, } | ${ok//;/, } |"
  done
done
echo
for link in $LINKS; do
  echo "$link: bandwidth $(calc "${BW[$link]} * 8 / 1e6" 1) Mbit/s, start with everything local $(field "$link" overlayfs 5) s (ctr run after the overlayfs pull)"
done
echo "lower bound = needed bytes / bandwidth + start with everything local; needed = compressed chunks of the $read_files files the entrypoint reads"
echo "all runs:"
cat "$WORK/results"
