#!/usr/bin/env bash
# Unconverted images through a SOCI index against eStargz and a full pull (issue 19, item
# 5): time until the container is ready and registry bytes, for
#   overlayfs    the original gzip image: `ctr image pull` (everything downloaded and
#                unpacked), then `ctr run`;
#   soci         the same image, untouched, indexed by `estargz-convert index`
#                (--min-layer-size 0): rpull --snapshotter stargz + run (lazy, spans);
#   soci-learned the same image (another repository, same manifest digest) indexed with
#                --record-from a recorded run: the spans of the recorded files are a
#                prefetch artifact fetched at mount;
#   esgz         converted by estargz-convert without prioritized files, rpull + run;
#   esgz-prio    converted with --prioritized-files (the entrypoint's read set);
#   esgz-learned converted without prioritized files (another repository, same digest),
#                then `estargz-convert index --record-from` the recorded run: the
#                recorded files as a referrer file list the daemon prefetches at mount.
# The learned profile is the daemon's access record of one esgz run (loopback, [record]
# enable = true); the record names the esgz manifest, so its manifestDigest is rewritten
# to the original manifest's (same layers, same order, same paths) before indexing.
#
# The image (IMAGE=interp, the default) is testkit's interp image, the shape of a real
# one: busybox plus an interpreter-like base of INTERP_FILES small modules in package
# directories, libraries and 16 MiB data files (INTERP_MIB MiB; testkit/src/image/
# interp.rs, as in benches/ondemand.sh); its entrypoint `cat`s every 25th package
# directory and three large libraries, then prints READY. IMAGE=lazy-bench is the older
# preset (busybox plus three data layers of mostly incompressible files, SIZE_MIB MiB;
# the entrypoint reads about a tenth and prints "ready"). "read MB" is the size of the
# files the entrypoint reads (interp only), so registry MB / read MB is the overhead.
# Links and the measuring are benches/lazy_pull.sh's (benches/lib.sh: fresh stack per run;
# shaped = netns + veth + tbf RATE + delay proxy DELAY_MS each way; loopback).
#
# Env: IMAGE (default interp), INTERP_MIB (default 200), INTERP_FILES (default 8000),
#      SIZE_MIB (lazy-bench, default 200), RUNS (default 1), RATE (default 100mbit), DELAY_MS
#      (default 10), LINKS (default "loopback shaped"), CASES (default all six),
#      LOG_LEVEL (default info; a filter such as info,estargz_snapshotter::lazy::soci=debug
#      logs every SOCI range request), LOGS_TO (a directory: each run's daemon log is
#      kept there), NET (default 10.231.9).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh
source benches/lib.sh

IMAGE=${IMAGE:-interp}
INTERP_MIB=${INTERP_MIB:-200}
INTERP_FILES=${INTERP_FILES:-8000}
SIZE_MIB=${SIZE_MIB:-200}
case $IMAGE in
  interp) KIND=interp:$INTERP_MIB:$INTERP_FILES READY=READY ;;
  lazy-bench) KIND=lazy-bench:$SIZE_MIB READY=ready ;;
  *) echo "unknown IMAGE $IMAGE" >&2; exit 2 ;;
esac
RUNS=${RUNS:-1}
RATE=${RATE:-100mbit}
DELAY_MS=${DELAY_MS:-10}
LINKS=${LINKS:-loopback shaped}
LOG_LEVEL=${LOG_LEVEL:-info}
NET=${NET:-10.231.9}
ALL_CASES=(overlayfs soci soci-learned esgz esgz-prio esgz-learned)
read -r -a CASES <<<"${CASES:-${ALL_CASES[*]}}"
declare -A REPO=([overlayfs]=plain:v1 [soci]=soci:v1 [soci-learned]=learn:v1 [esgz]=plain:esgz [esgz-prio]=plain:esgz-prio
  [esgz-learned]=elearn:esgz)

bench_init soci

# run_until_ready SNAPSHOTTER_ARGS...: `ctr run` the image $REF; prints when $READY appeared.
run_until_ready() {
  rm -f "$WORK/ready-at"
  ctr_ run --rm "$@" "$REF" bench | while IFS= read -r line; do
    echo "$line" >>"$WORK/run-output"
    [[ "$line" == "$READY" ]] && now >"$WORK/ready-at"
  done
  [[ -s "$WORK/ready-at" ]] || { cat "$WORK/run-output"; die "no ready line from $REF"; }
  cat "$WORK/ready-at"
}

# measure LINK CASE ROUND: one measured run; appends a line to $WORK/results.
measure() {
  local link=$1 case=$2 round=$3 start pulled ready bytes requests
  REF=$REG/${REPO[$case]}
  start_stack ""
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
    fuse=$(fuse_mounts | wc -l)
    [[ "$fuse" -ge "$LAYERS" ]] || { tail -20 "$WORK/run/snapshotter/log"; die "$case: only $fuse FUSE layer mounts"; }
  fi
  sleep 1 # the registry logs a request when it is done
  read -r bytes requests < <(blob_gets "$REG_LOG" "$first_line")
  if [[ -n "${LOGS_TO:-}" ]]; then
    mkdir -p "$LOGS_TO"
    cp "$WORK/run/snapshotter/log" "$LOGS_TO/$link-$case-$round.log"
  fi
  stop_stack
  printf '%-9s %-13s round %d: ready after %6ss (pull %6ss), %7s MB in %d blob GETs\n' \
    "$link" "$case" "$round" "$(calc "$ready - $start")" "$(calc "$pulled - $start")" "$(mb "$bytes")" "$requests"
  echo "$link $case $round $(calc "$ready - $start") $bytes $requests" >>"$WORK/results"
}

# learn: one recorded esgz run on loopback; the record, pointed at the original
# manifest, indexes learn:v1 with a prefetch artifact.
learn() {
  REG=$LOOP_REG REF=$LOOP_REG/plain:esgz
  start_stack "[record]
enable = true"
  : >"$WORK/run-output"
  ctr_remote image rpull --plain-http --snapshotter stargz "$REF" >/dev/null
  run_until_ready --snapshotter stargz >/dev/null
  stop_stack "$WORK/record"
  cat "$WORK"/record/*.jsonl >"$WORK/recorded.jsonl"
  "$CONVERT" index --plain-http --no-progress --json --record-from "$WORK/recorded.jsonl" \
    "$LOOP_REG/elearn:esgz" 2>/dev/null |
    jq -r '.manifests[].layers[] | select(.prefetch) | "esgz file list \(.digest[7:19]): \(.prefetch.files) files"'
  local original
  original=sha256:$(manifest learn v1 | sha256sum | cut -d' ' -f1)
  cat "$WORK"/record/*.jsonl | jq -c --arg m "$original" '.manifestDigest = $m' >"$WORK/learned.jsonl"
  echo "recorded $(wc -l <"$WORK/learned.jsonl") file opens"
  "$CONVERT" index --plain-http --no-progress --min-layer-size 0 --json \
    --record-from "$WORK/learned.jsonl" "$LOOP_REG/learn:v1" 2>/dev/null |
    jq -r '.manifests[].layers[] | select(.prefetch) | "prefetch \(.digest[7:19]): \(.prefetch.files) files, \(.prefetch.spans) spans"'
}

start_registry
LOOP_REG=$REGISTRY

log "build the $KIND image (3 repositories), index it, convert it twice, learn a profile"
for repo in plain soci learn; do
  "$MAKE_IMAGE" push "$LOOP_REG" "$repo:v1" "$KIND" >/dev/null
done
READ_BYTES=0
if [[ $IMAGE == interp ]]; then
  "$MAKE_IMAGE" reads "$KIND" >"$WORK/reads.txt"
  cut -d' ' -f1 "$WORK/reads.txt" >"$WORK/read-set.txt"
  READ_BYTES=$(awk '{ s += $2 } END { print s + 0 }' "$WORK/reads.txt")
else
  "$MAKE_IMAGE" read-set "$SIZE_MIB" >"$WORK/read-set.txt"
fi
LAYERS=$(manifest plain v1 | jq '.layers | length')
"$CONVERT" index --plain-http --no-progress --min-layer-size 0 "$LOOP_REG/soci:v1" 2>/dev/null
"$CONVERT" "$LOOP_REG/plain:v1" "$LOOP_REG/plain:esgz" --plain-http --no-progress 2>/dev/null
"$CONVERT" "$LOOP_REG/plain:v1" "$LOOP_REG/plain:esgz-prio" --plain-http --no-progress \
  --prioritized-files "$WORK/read-set.txt" 2>/dev/null
"$CONVERT" "$LOOP_REG/plain:v1" "$LOOP_REG/elearn:esgz" --plain-http --no-progress 2>/dev/null
[[ "$(manifest elearn esgz | sha256sum)" == "$(manifest plain esgz | sha256sum)" ]] ||
  die "converting twice gave two digests: the record would not apply to elearn:esgz"
learn
for case in "${ALL_CASES[@]}"; do
  r=${REPO[$case]}
  echo "$case: layers $(mb "$(manifest "${r%%:*}" "${r##*:}" | jq '[.layers[].size] | add')") MB"
done
echo "the entrypoint reads $(mb "$READ_BYTES") MB of files"

: >"$WORK/results"
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
  for round in $(seq 1 "$RUNS"); do
    for case in "${CASES[@]}"; do measure "$link" "$case" "$round"; done
  done
  [[ $link == shaped ]] && teardown_shaped_link
done

field() { awk -v l="$1" -v c="$2" -v f="$3" '$1 == l && $2 == c { print $f }' "$WORK/results" | median; }

log "results ($KIND image, median of $RUNS runs, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "| link | case | time to ready s | registry MB | time vs esgz | time vs esgz-prio | bytes vs esgz | registry / read |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for link in $LINKS; do
  e=$(field "$link" esgz 4) p=$(field "$link" esgz-prio 4) eb=$(field "$link" esgz 5)
  for case in "${CASES[@]}"; do
    t=$(field "$link" "$case" 4) b=$(field "$link" "$case" 5)
    rr=-
    [[ $READ_BYTES -gt 0 ]] && rr=$(calc "$b / $READ_BYTES" 2)
    echo "| $link | $case | $t | $(mb "$b") | $(calc "$t / ${e:-1}" 2) | $(calc "$t / ${p:-1}" 2) | $(calc "$b / ${eb:-1}" 2) | $rr |"
  done
done
echo "targets (issue 19): soci <= 1.3x esgz (loopback), <= 1.5x (shaped); soci-learned <= 1.1x esgz-prio; soci bytes <= 1.5x esgz; esgz-learned ~ esgz-prio"
