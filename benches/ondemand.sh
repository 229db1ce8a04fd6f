#!/usr/bin/env bash
# On-demand read benchmark (issue 14, item 4): time to READY, registry bytes and blob GETs
# of images whose files are NOT prioritized, so every byte the entrypoint reads is fetched
# on demand, with containerd's overlayfs (full pull), the Go reference and ours, on a
# shaped link and on loopback; and registry bytes against the bytes actually read.
#
# Workloads (images built in code by testkit's make-image, converted by estargz-convert
# with default settings and no prioritized files):
#   interp     busybox + an interpreter-like base (INTERP_MIB MiB, INTERP_FILES small
#              modules in package directories of 40, libraries, 16 MiB random files between
#              the packages; see testkit/src/image/interp.rs). The entrypoint `cat`s whole
#              package directories (every 25th, in tar order: a few hundred modules, as an
#              interpreter's imports do) and three large libraries (6, 4, 2 MiB), then
#              prints READY;
#   scattered  busybox + a layer of SCATTERED_MIB MiB of files of 16 to 128 KiB of random
#              bytes; the entrypoint `cat`s 256 of them picked at random, in random order
#              (small reads scattered over a large layer: read-ahead there is waste);
#   interp-prio (not in the default set) the interp image converted with its read set as
#              --prioritized-files, for comparison.
# Built images are cached under CACHE_DIR, keyed by the parameters, testkit's image code
# and the estargz-convert binary.
#
# Cases, each a fresh containerd (both proxy plugins registered) and daemon root per run:
#   overlayfs  `ctr image pull` of the gzip original, then `ctr run`;
#   ref        `ctr-remote image rpull --snapshotter refstargz` + `ctr run`: the Go
#              reference (stargz-snapshotter 0.12, built by REF_BUILD), default config;
#   ours       the same with `--snapshotter stargz`: estargz-snapshotter (release build of
#              this worktree) with deploy/config.toml's settings in temp dirs.
# Measured from the start of the pull: time to READY (the line on `ctr run`'s output),
# registry bytes and blob GETs in the registry's access log up to one second after READY
# (later background fetching is not counted), and "read MB": the bytes of the files the
# entrypoint reads (busybox included), so registry MB / read MB is the link's overhead.
# The table gives medians over ROUNDS and ours/reference ratios of time, GETs and bytes.
#
# Links (ROUNDS rounds of every workload and case each):
#   shaped    docker-registry in its own network namespace behind a veth pair with tbf at
#             RATE both ways, reached through testkit's delay-proxy on 127.0.0.1 adding
#             DELAY_MS each way (RTT + 2 * DELAY_MS), as in benches/lazy_pull.sh;
#   loopback  docker-registry on 127.0.0.1.
# Everything (netns, veth, qdiscs, processes, mounts, temp dirs) is removed on exit and on
# Ctrl-C; only processes this script started are stopped.
#
# Env: WORKLOADS (default "interp scattered"), CASES (default "overlayfs ref ours"), ROUNDS
#      (default 3), LINKS (default "shaped loopback"), INTERP_MIB (default 300),
#      INTERP_FILES (default 12000), SCATTERED_MIB (default 200), RATE (default 100mbit),
#      DELAY_MS (default 10), LOG_LEVEL our daemon's (default info), LOGS_DIR (each run's
#      logs and registry lines copied there), NET the /30 prefix (default 10.231.10),
#      SMALL=1 (a quick check: ROUNDS=1, INTERP_MIB=48, INTERP_FILES=2000,
#      SCATTERED_MIB=24 unless set); our daemon's config: OUR_CONFIG, OUR_SET; the
#      reference: REF_BUILD, REF_BIN, REF_CONFIG; CACHE_DIR, TIMEOUT (see
#      benches/compare.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh
source benches/lib.sh
source benches/compare.sh

if [[ "${SMALL:-0}" == 1 ]]; then
  ROUNDS=${ROUNDS:-1} INTERP_MIB=${INTERP_MIB:-48} INTERP_FILES=${INTERP_FILES:-2000}
  SCATTERED_MIB=${SCATTERED_MIB:-24}
fi
ROUNDS=${ROUNDS:-3}
INTERP_MIB=${INTERP_MIB:-300}
INTERP_FILES=${INTERP_FILES:-12000}
SCATTERED_MIB=${SCATTERED_MIB:-200}
RATE=${RATE:-100mbit}
DELAY_MS=${DELAY_MS:-10}
LINKS=${LINKS:-shaped loopback}
LOG_LEVEL=${LOG_LEVEL:-info}
LOGS_DIR=${LOGS_DIR:-}
NET=${NET:-10.231.10}
read -r -a WORKLOADS <<<"${WORKLOADS:-interp scattered}"
read -r -a CASES <<<"${CASES:-overlayfs ref ours}"
declare -A SNAP=([overlayfs]=overlayfs [ref]=refstargz [ours]=stargz)
# The image of each workload: its original (overlayfs) and its eStargz tag, and its reads.
declare -A ORIGINAL=([interp]=interp [scattered]=scattered [interp-prio]=interp)
declare -A ESGZ=([interp]=interp-esgz [scattered]=scattered-esgz [interp-prio]=interp-prio)
declare -A READS=([interp]="interp:$INTERP_MIB:$INTERP_FILES" [scattered]="scattered:$SCATTERED_MIB"
  [interp-prio]="interp:$INTERP_MIB:$INTERP_FILES")
for case in "${CASES[@]}"; do [[ -n "${SNAP[$case]:-}" ]] || die "unknown case $case"; done
for workload in "${WORKLOADS[@]}"; do [[ -n "${ESGZ[$workload]:-}" ]] || die "unknown workload $workload"; done

compare_init ondemand

# build_images: both originals, their unprioritized conversions, the prioritized interp.
build_images() {
  log "build the interp (${INTERP_MIB} MiB, ${INTERP_FILES} files) and scattered (${SCATTERED_MIB} MiB) images, convert them"
  "$MAKE_IMAGE" push "$LOOP_REG" ondemand:interp "interp:$INTERP_MIB:$INTERP_FILES" >/dev/null
  "$MAKE_IMAGE" push "$LOOP_REG" ondemand:scattered "scattered:$SCATTERED_MIB" >/dev/null
  "$MAKE_IMAGE" reads "${READS[interp]}" | cut -d' ' -f1 >"$WORK/prioritized.txt"
  convert_image ondemand:interp ondemand:interp-esgz
  convert_image ondemand:scattered ondemand:scattered-esgz
  convert_image ondemand:interp ondemand:interp-prio "$WORK/prioritized.txt"
}
image_cache ondemand "ondemand v1 INTERP=$INTERP_MIB:$INTERP_FILES SCATTERED=$SCATTERED_MIB" build_images

declare -A READ_BYTES
for workload in "${WORKLOADS[@]}"; do
  READ_BYTES[$workload]=$("$MAKE_IMAGE" reads "${READS[$workload]}" | awk '{ s += $2 } END { print s + 0 }')
  files=$("$MAKE_IMAGE" reads "${READS[$workload]}" | wc -l)
  echo "$workload: original $(mb "$(manifest ondemand "${ORIGINAL[$workload]}" | jq '[.layers[].size] | add')") MB," \
    "eStargz $(mb "$(manifest ondemand "${ESGZ[$workload]}" | jq '[.layers[].size] | add')") MB;" \
    "the entrypoint reads $files files, $(mb "${READ_BYTES[$workload]}") MB"
done

# run_until_ready SNAPSHOTTER REF: pulls and runs REF; prints the time READY appeared.
run_until_ready() {
  local snap=$1 ref=$2
  local ctr=(/usr/bin/ctr --address "$CONTAINERD_SOCK" --namespace demo)
  local run=("${ctr[@]}" run --rm)
  if [[ $snap == overlayfs ]]; then
    timeout "$TIMEOUT" "${ctr[@]}" image pull --plain-http "$ref" >"$WORK/pull.log" 2>&1
  else
    timeout "$TIMEOUT" /usr/bin/ctr-remote --address "$CONTAINERD_SOCK" --namespace demo \
      image rpull --plain-http --snapshotter "$snap" "$ref" >"$WORK/pull.log" 2>&1
    run+=(--snapshotter "$snap")
  fi || { tail -5 "$WORK/pull.log" >&2; return 1; }
  rm -f "$WORK/ready-at"
  : >"$WORK/run-output"
  # A container id unique to this script run (runc's state dir is shared by all containerds).
  timeout "$TIMEOUT" "${run[@]}" "$ref" "ondemand-$$" 2>>"$WORK/run-output" | while IFS= read -r line; do
    echo "$line" >>"$WORK/run-output"
    [[ "$line" == READY ]] && now >"$WORK/ready-at"
  done
  [[ -s "$WORK/ready-at" ]] || { tail -5 "$WORK/run-output" >&2; return 1; }
  cat "$WORK/ready-at"
}

# measure LINK WORKLOAD CASE ROUND: one run; appends a line to $WORK/results.
measure() {
  local link=$1 workload=$2 case=$3 round=$4 snap=${SNAP[$3]} tag first start ready
  tag=$([[ $case == overlayfs ]] && echo "${ORIGINAL[$workload]}" || echo "${ESGZ[$workload]}")
  start_case_stack "$snap"
  first=$(($(wc -l <"$REG_LOG") + 1))
  start=$(now)
  local to_ready=- bytes requests mounts
  if ready=$(run_until_ready "$snap" "$REG/ondemand:$tag"); then
    to_ready=$(calc "$ready - $start")
  else
    echo "  $link $workload $case round $round FAILED"
  fi
  sleep 1 # the registry logs a request when it is done
  read -r bytes requests < <(blob_gets "$REG_LOG" "$first")
  mounts=$(fuse_count)
  [[ -n "$LOGS_DIR" ]] && mkdir -p "$LOGS_DIR" &&
    tail -n +"$first" "$REG_LOG" >"$LOGS_DIR/$link-$workload-$case-$round.registry.log"
  stop_case_stack ${LOGS_DIR:+"$LOGS_DIR/$link-$workload-$case-$round"}
  printf '%-8s %-11s %-9s round %d: READY after %7ss, %8s MB in %4d blob GETs (%.2fx read), %d lazy mounts\n' \
    "$link" "$workload" "$case" "$round" "$to_ready" "$(mb "$bytes")" "$requests" \
    "$(calc "$bytes / ${READ_BYTES[$workload]}" 2)" "$mounts"
  echo "$link $workload $case $round $to_ready $bytes $requests $mounts" >>"$WORK/results"
}

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
  for round in $(seq 1 "$ROUNDS"); do
    for workload in "${WORKLOADS[@]}"; do
      for case in "${CASES[@]}"; do measure "$link" "$workload" "$case" "$round"; done
    done
  done
  [[ $link == shaped ]] && teardown_shaped_link
done

# field LINK WORKLOAD CASE COLUMN: median over the rounds that reached READY ("-" if none).
field() {
  awk -v l="$1" -v w="$2" -v c="$3" -v f="$4" '$1 == l && $2 == w && $3 == c && $5 != "-" { print $f }' "$WORK/results" |
    { vals=$(grep -v '^-$' || true); [[ -n "$vals" ]] && median <<<"$vals" || echo -; }
}

log "results: median of $ROUNDS rounds (failed rounds left out: $(awk '$5 == "-"' "$WORK/results" | wc -l)), $(nproc) cores"
echo "| link | workload | case | time to READY s | blob GETs | registry MB | read MB | registry / read | lazy mounts | vs ref time | vs ref GETs | vs ref bytes |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for link in $LINKS; do
  for workload in "${WORKLOADS[@]}"; do
    for case in "${CASES[@]}"; do
      t=$(field "$link" "$workload" "$case" 5) bytes=$(field "$link" "$workload" "$case" 6)
      gets=$(field "$link" "$workload" "$case" 7)
      vs_t=- vs_g=- vs_b=-
      if [[ $case != ref ]]; then
        vs_t=$(ratio "$t" "$(field "$link" "$workload" ref 5)")
        vs_g=$(ratio "$gets" "$(field "$link" "$workload" ref 7)")
        vs_b=$(ratio "$bytes" "$(field "$link" "$workload" ref 6)")
      fi
      echo "| $link | $workload | $case | $t | $gets | $(mb "$bytes") | $(mb "${READ_BYTES[$workload]}") | $(ratio "$bytes" "${READ_BYTES[$workload]}") | $(field "$link" "$workload" "$case" 8) | $vs_t | $vs_g | $vs_b |"
    done
  done
done
echo
echo "all runs (link workload case round time_to_ready bytes GETs lazy_mounts):"
cat "$WORK/results"
