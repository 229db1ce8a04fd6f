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
#   interp-prio the interp image converted with its read set as --prioritized-files
#              (prefetched at mount; the issue's target: no slower than the reference);
#              no overlayfs case (its original is interp's).
# Built images are cached under CACHE_DIR, keyed by the parameters, testkit's image code
# and the estargz-convert binary.
#
# Cases, each a fresh containerd (both proxy plugins registered) and daemon root per run:
#   overlayfs  `ctr image pull` of the gzip original, then `ctr run`;
#   ref        `ctr-remote image rpull --snapshotter refstargz` + `ctr run`: the Go
#              reference (stargz-snapshotter 0.12, built by REF_BUILD), default config;
#   ours       the same with `--snapshotter stargz`: estargz-snapshotter (release build of
#              this worktree) with deploy/config.toml's settings in temp dirs;
#   before     (with BASELINE_REV) the same with the daemon of commit BASELINE_REV and that
#              commit's deploy/config.toml: its tree (`git archive`) under BASELINE_TARGET
#              (default: the target dir + "-before"), built there in release.
# Measured from the start of the pull: time to READY (the line on `ctr run`'s output),
# registry bytes and blob GETs in the registry's access log up to one second after READY
# (later background fetching is not counted), and "read MB": the bytes of the files the
# entrypoint reads (busybox included), so registry MB / read MB is the link's overhead.
# "for reads MB" (ours and before only): the bytes the daemon fetched for reads, i.e. its
# metric estargz_fetched_bytes_total of kinds on_demand and prefetch (readahead windows
# included; background fetching and the TOC left out) read from its status socket at
# READY: registry MB also holds background steps that ran in the gaps of the reads.
# The table gives medians over ROUNDS and ratios of time, GETs and bytes against the
# reference, and of time and bytes fetched for reads against before.
#
# Links (ROUNDS rounds of every workload and case each):
#   shaped    docker-registry in its own network namespace behind a veth pair with tbf at
#             RATE both ways, reached through testkit's delay-proxy on 127.0.0.1 adding
#             DELAY_MS each way (RTT + 2 * DELAY_MS), as in benches/lazy_pull.sh;
#   loopback  docker-registry on 127.0.0.1.
# Everything (netns, veth, qdiscs, processes, mounts, temp dirs) is removed on exit and on
# Ctrl-C; only processes this script started are stopped.
#
# Env: WORKLOADS (default "interp scattered interp-prio"), CASES (default "overlayfs ref
#      ours", and before with BASELINE_REV), BASELINE_REV, BASELINE_TARGET, ROUNDS
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
BASELINE_REV=${BASELINE_REV:-}
read -r -a WORKLOADS <<<"${WORKLOADS:-interp scattered interp-prio}"
read -r -a CASES <<<"${CASES:-overlayfs ref ours${BASELINE_REV:+ before}}"
declare -A SNAP=([overlayfs]=overlayfs [ref]=refstargz [ours]=stargz [before]=stargz)
# The image of each workload: its original (overlayfs) and its eStargz tag, and its reads.
declare -A ORIGINAL=([interp]=interp [scattered]=scattered [interp-prio]=interp)
declare -A ESGZ=([interp]=interp-esgz [scattered]=scattered-esgz [interp-prio]=interp-prio)
declare -A READS=([interp]="interp:$INTERP_MIB:$INTERP_FILES" [scattered]="scattered:$SCATTERED_MIB"
  [interp-prio]="interp:$INTERP_MIB:$INTERP_FILES")
for case in "${CASES[@]}"; do [[ -n "${SNAP[$case]:-}" ]] || die "unknown case $case"; done
for workload in "${WORKLOADS[@]}"; do [[ -n "${ESGZ[$workload]:-}" ]] || die "unknown workload $workload"; done

compare_init ondemand

# The baseline daemon (case before): BASELINE_REV's tree, built in its own target dir.
if [[ " ${CASES[*]} " == *" before "* ]]; then
  [[ -n "$BASELINE_REV" ]] || die "case before needs BASELINE_REV"
  rev=$(git -C "$ROOT" rev-parse --verify "$BASELINE_REV^{commit}") || die "no commit $BASELINE_REV"
  BASELINE_TARGET=${BASELINE_TARGET:-${CARGO_TARGET_DIR:-$ROOT/target}-before}
  BEFORE_SRC=$BASELINE_TARGET/src-$rev
  if [[ ! -f "$BEFORE_SRC/Cargo.toml" ]]; then
    rm -rf "$BEFORE_SRC.tmp" && mkdir -p "$BEFORE_SRC.tmp"
    git -C "$ROOT" archive "$rev" | tar -x -C "$BEFORE_SRC.tmp"
    mv -T "$BEFORE_SRC.tmp" "$BEFORE_SRC"
  fi
  log "build the baseline daemon at ${rev:0:12} (release, in $BASELINE_TARGET)"
  (cd "$BEFORE_SRC" && CARGO_TARGET_DIR=$BASELINE_TARGET cargo build --release -q -p estargz-snapshotter) ||
    die "building the baseline daemon failed"
  BEFORE_SNAPSHOTTER=$BASELINE_TARGET/release/estargz-snapshotter
fi

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

# mb_or_dash BYTES: BYTES in MB, "-" for "-".
mb_or_dash() { if [[ $1 == - ]]; then echo -; else mb "$1"; fi; }

# fetched_for_reads: bytes our daemon (or its fuse manager) fetched for reads so far: its
# metric estargz_fetched_bytes_total of kinds on_demand and prefetch; "-" if unavailable.
fetched_for_reads() {
  { curl -sf --max-time 5 --unix-socket "$WORK/run/ours/root/status.sock" http://localhost/metrics || true; } |
    awk '/^estargz_fetched_bytes_total\{kind="(on_demand|prefetch)"\} / { s += $2; found = 1 }
      END { if (found) printf "%.0f\n", s; else print "-" }'
}

# measure LINK WORKLOAD CASE ROUND: one run; appends a line to $WORK/results.
measure() {
  local link=$1 workload=$2 case=$3 round=$4 snap=${SNAP[$3]} tag first start ready
  tag=$([[ $case == overlayfs ]] && echo "${ORIGINAL[$workload]}" || echo "${ESGZ[$workload]}")
  if [[ $case == before ]]; then
    SNAPSHOTTER=$BEFORE_SNAPSHOTTER OUR_CONFIG=$BEFORE_SRC/deploy/config.toml start_case_stack "$snap"
  else
    start_case_stack "$snap"
  fi
  first=$(($(wc -l <"$REG_LOG") + 1))
  start=$(now)
  local to_ready=- bytes requests mounts for_reads=-
  if ready=$(run_until_ready "$snap" "$REG/ondemand:$tag"); then
    to_ready=$(calc "$ready - $start")
    [[ $snap == stargz ]] && for_reads=$(fetched_for_reads)
  else
    echo "  $link $workload $case round $round FAILED"
  fi
  sleep 1 # the registry logs a request when it is done
  read -r bytes requests < <(blob_gets "$REG_LOG" "$first")
  mounts=$(fuse_count)
  [[ -n "$LOGS_DIR" ]] && mkdir -p "$LOGS_DIR" &&
    tail -n +"$first" "$REG_LOG" >"$LOGS_DIR/$link-$workload-$case-$round.registry.log"
  stop_case_stack ${LOGS_DIR:+"$LOGS_DIR/$link-$workload-$case-$round"}
  printf '%-8s %-11s %-9s round %d: READY after %7ss, %8s MB in %4d blob GETs (%.2fx read), %d lazy mounts, %s MB for reads\n' \
    "$link" "$workload" "$case" "$round" "$to_ready" "$(mb "$bytes")" "$requests" \
    "$(calc "$bytes / ${READ_BYTES[$workload]}" 2)" "$mounts" "$(mb_or_dash "$for_reads")"
  echo "$link $workload $case $round $to_ready $bytes $requests $mounts $for_reads" >>"$WORK/results"
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
      for case in "${CASES[@]}"; do
        # interp-prio's original is interp's: its overlayfs run would repeat that one.
        [[ $workload == interp-prio && $case == overlayfs ]] && continue
        measure "$link" "$workload" "$case" "$round"
      done
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
echo "| link | workload | case | time to READY s | blob GETs | registry MB | for reads MB | read MB | registry / read | lazy mounts | vs ref time | vs ref GETs | vs ref bytes | vs before time | vs before for reads |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for link in $LINKS; do
  for workload in "${WORKLOADS[@]}"; do
    for case in "${CASES[@]}"; do
      [[ $workload == interp-prio && $case == overlayfs ]] && continue
      t=$(field "$link" "$workload" "$case" 5) bytes=$(field "$link" "$workload" "$case" 6)
      gets=$(field "$link" "$workload" "$case" 7) for_reads=$(field "$link" "$workload" "$case" 9)
      vs_t=- vs_g=- vs_b=- vs_bt=- vs_bb=-
      if [[ $case != ref ]]; then
        vs_t=$(ratio "$t" "$(field "$link" "$workload" ref 5)")
        vs_g=$(ratio "$gets" "$(field "$link" "$workload" ref 7)")
        vs_b=$(ratio "$bytes" "$(field "$link" "$workload" ref 6)")
      fi
      if [[ $case == ours ]]; then
        vs_bt=$(ratio "$t" "$(field "$link" "$workload" before 5)")
        vs_bb=$(ratio "$for_reads" "$(field "$link" "$workload" before 9)")
      fi
      echo "| $link | $workload | $case | $t | $gets | $(mb "$bytes") | $(mb_or_dash "$for_reads") | $(mb "${READ_BYTES[$workload]}") | $(ratio "$bytes" "${READ_BYTES[$workload]}") | $(field "$link" "$workload" "$case" 8) | $vs_t | $vs_g | $vs_b | $vs_bt | $vs_bb |"
    done
  done
done
echo
echo "all runs (link workload case round time_to_ready bytes GETs lazy_mounts for_reads_bytes):"
cat "$WORK/results"
