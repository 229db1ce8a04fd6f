#!/usr/bin/env bash
# Fleet benchmark (issue 13, item 5): N application images that share one large base layer
# pulled and started at the same moment on one node, with containerd's overlayfs (full
# pull), the Go reference remote snapshotter and ours, on a shaped link and on loopback.
#
# Images (built in code by testkit's make-image, `make-image fleet`): every app is
#   busybox layer + base layer + its own data layer
# The base layer (shared, same digest in every app) is interpreter-like: BASE_FILES small
# modules (a few KiB, half text) in package directories of 40, shared libraries (an
# eighth of BASE_MIB, three of them 2 to 6 MiB) and 16 MiB files of random bytes between the
# packages filling BASE_MIB. The data layer holds a hot 3 MiB file (random bytes), two
# directories of small files (200 and 300 files), and an unread 8 MiB file. Every app's
# entrypoint `cat`s the interpreter's start-up set from the base (every 25th package
# directory whole, in tar order, and the three large libraries: about 4 % of the base's
# files, the same for all apps), its hot file and both directories, then prints READY.
# The eStargz images come from estargz-convert (default settings) run once over an index
# of the N apps, so the shared layers are converted once and stay shared:
#   unprioritized  no prioritized files (.no.prefetch.landmark);
#   prioritized    --prioritized-files = the files the app reads, in reading order
#                  (the same paths in every app), so they are first and prefetched.
# Built images are cached under CACHE_DIR, keyed by the parameters, testkit's image code
# and the estargz-convert binary (so a rebuilt converter converts again).
#
# Cases, each a fresh containerd (both proxy plugins registered) and daemon root per run:
#   overlayfs   `ctr image pull` of the gzip originals, then `ctr run`;
#   ref         `ctr-remote image rpull --snapshotter refstargz` of the unprioritized
#               images, then `ctr run --snapshotter refstargz`: the Go reference
#               (stargz-snapshotter 0.12, built by REF_BUILD), default config;
#   ours        the same through `--snapshotter stargz`: estargz-snapshotter (release
#               build of this worktree) with deploy/config.toml's settings (fuse manager,
#               prefetch, background fetch, passthrough) in temp dirs;
#   ref-prio, ours-prio   the same with the prioritized images.
# In each run all N apps are pulled and started at once (N background jobs started
# together; each pulls its image, then runs it). Measured from that start:
#   wall        time to the last READY; per-app times (READY of that app): median and slowest;
#   registry    bytes and blob GETs in the registry's access log from the start to one
#               second after the last READY (background fetch goes on after that and is
#               not counted);
#   peak RSS    VmHWM at that moment of the daemon (ours or the reference), of our fuse
#               manager process (when running) and of containerd;
#   lazy mounts FUSE mounts under the run's dirs (layers served lazily: 2 + N when every
#               layer is lazy; fewer means layers fell back to a full pull).
# The table gives medians over ROUNDS and ours/reference ratios (time, bytes) per
# image kind; "read MB" is what the N entrypoints read (distinct files: the start-up set
# once, each app's files).
#
# Links (ROUNDS rounds of all CASES each):
#   shaped    docker-registry in its own network namespace behind a veth pair with tbf at
#             RATE both ways, reached through testkit's delay-proxy on 127.0.0.1 adding
#             DELAY_MS each way (RTT + 2 * DELAY_MS), as in benches/lazy_pull.sh;
#   loopback  docker-registry on 127.0.0.1.
# Everything (netns, veth, qdiscs, processes, mounts, temp dirs) is removed on exit and on
# Ctrl-C; only processes this script started are stopped.
#
# Env: N apps (default 10), ROUNDS (default 2), BASE_MIB base layer content in MiB
#      (default 400), BASE_FILES small files in it (default 24000), LINKS (default
#      "shaped loopback"), CASES (default "overlayfs ref ours ref-prio ours-prio"), RATE
#      (default 100mbit), DELAY_MS (default 10), LOG_LEVEL our daemon's (default info),
#      LOGS_DIR (each run's daemon, manager, containerd logs and registry lines copied
#      there), NET the /30 prefix (default 10.231.9), SMALL=1 (a quick check: N=3,
#      ROUNDS=1, BASE_MIB=48, BASE_FILES=2000 unless set); our daemon's config:
#      OUR_CONFIG, OUR_SET; the reference: REF_BUILD, REF_BIN, REF_CONFIG; CACHE_DIR,
#      TIMEOUT (see benches/compare.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh
source benches/lib.sh
source benches/compare.sh

if [[ "${SMALL:-0}" == 1 ]]; then
  N=${N:-3} ROUNDS=${ROUNDS:-1} BASE_MIB=${BASE_MIB:-48} BASE_FILES=${BASE_FILES:-2000}
fi
N=${N:-10}
ROUNDS=${ROUNDS:-2}
BASE_MIB=${BASE_MIB:-400}
BASE_FILES=${BASE_FILES:-24000}
RATE=${RATE:-100mbit}
DELAY_MS=${DELAY_MS:-10}
LINKS=${LINKS:-shaped loopback}
LOG_LEVEL=${LOG_LEVEL:-info}
LOGS_DIR=${LOGS_DIR:-}
NET=${NET:-10.231.9}
ALL_CASES=(overlayfs ref ours ref-prio ours-prio)
read -r -a CASES <<<"${CASES:-${ALL_CASES[*]}}"
declare -A SNAP=([overlayfs]=overlayfs [ref]=refstargz [ours]=stargz [ref-prio]=refstargz [ours-prio]=stargz)
declare -A SUFFIX=([overlayfs]="" [ref]=-esgz [ours]=-esgz [ref-prio]=-prio [ours-prio]=-prio)
for case in "${CASES[@]}"; do [[ -n "${SNAP[$case]:-}" ]] || die "unknown case $case"; done
APP_PIDS=()

compare_init fleet
fleet_cleanup() {
  set +e
  local pid
  for pid in "${APP_PIDS[@]}"; do
    pkill -TERM -P "$pid" 2>/dev/null
    kill -TERM "$pid" 2>/dev/null
  done
  compare_cleanup
}
trap fleet_cleanup EXIT

MANIFEST=application/vnd.oci.image.manifest.v1+json
INDEX=application/vnd.oci.image.index.v1+json

# build_images: the originals, both conversions of the index, one tag per converted app.
build_images() {
  log "build $N apps on a ${BASE_MIB} MiB / ${BASE_FILES}-file base, convert them"
  "$MAKE_IMAGE" fleet "$LOOP_REG" fleet "$N" "$BASE_MIB" "$BASE_FILES" >/dev/null
  "$MAKE_IMAGE" reads "fleet:$BASE_MIB:$BASE_FILES:1" | cut -d' ' -f1 >"$WORK/prioritized.txt"
  convert_image fleet:all fleet:all-esgz
  convert_image fleet:all fleet:all-prio "$WORK/prioritized.txt"
  local variant k digests
  for variant in esgz prio; do
    mapfile -t digests < <(curl -sf -H "Accept: $INDEX" "http://$LOOP_REG/v2/fleet/manifests/all-$variant" |
      jq -r '.manifests[].digest')
    [[ ${#digests[@]} -eq $N ]] || die "all-$variant lists ${#digests[@]} manifests, not $N"
    for k in $(seq 1 "$N"); do retag fleet "${digests[$((k - 1))]}" "app$k-$variant"; done
  done
}

image_cache fleet "fleet v1 N=$N BASE_MIB=$BASE_MIB BASE_FILES=$BASE_FILES" build_images

# layer_digests TAG: the layer digests of fleet:TAG, space-separated.
layer_digests() { manifest fleet "$1" | jq -r '[.layers[].digest] | join(" ")'; }
layer_size() { manifest fleet "$1" | jq -r ".layers[$2].size"; }
for suffix in "" -esgz -prio; do
  base=$(layer_digests "app1$suffix" | cut -d' ' -f1-2)
  for k in $(seq 2 "$N"); do
    [[ $(layer_digests "app$k$suffix" | cut -d' ' -f1-2) == "$base" ]] ||
      die "fleet:app$k$suffix does not share its lower layers with app1$suffix"
  done
done
echo "base layer: $(mb "$(layer_size app1 1)") MB gzip, $(mb "$(layer_size app1-esgz 1)") MB eStargz," \
  "$(mb "$(layer_size app1-prio 1)") MB prioritized; app layer $(mb "$(layer_size app1 2)") MB gzip"

# What the fleet reads: the shared part once (busybox, start-up set), every app's files.
READ_BYTES=0
for k in $(seq 1 "$N"); do
  part=$("$MAKE_IMAGE" reads "fleet:$BASE_MIB:$BASE_FILES:$k" |
    awk -v all="$([[ $k == 1 ]] && echo 1)" 'all || $1 ~ /^app\// { s += $2 } END { print s + 0 }')
  READ_BYTES=$((READ_BYTES + part))
done
echo "the $N entrypoints read $(mb "$READ_BYTES") MB of distinct files" \
  "($("$MAKE_IMAGE" reads "fleet:$BASE_MIB:$BASE_FILES:1" | wc -l) files per app)"

# app_run K SNAPSHOTTER TAG_SUFFIX: pulls and runs app K; writes $WORK/apps/K/ready (the
# time READY appeared) or $WORK/apps/K/error.
app_run() {
  local k=$1 snap=$2 ref=$REG/fleet:app$1$3 dir=$WORK/apps/$1
  local ctr=(/usr/bin/ctr --address "$CONTAINERD_SOCK" --namespace demo)
  local pull=("${ctr[@]}" image pull --plain-http "$ref") run=("${ctr[@]}" run --rm)
  if [[ $snap != overlayfs ]]; then
    pull=(/usr/bin/ctr-remote --address "$CONTAINERD_SOCK" --namespace demo image rpull
      --plain-http --snapshotter "$snap" "$ref")
    run+=(--snapshotter "$snap")
  fi
  mkdir -p "$dir"
  if ! timeout "$TIMEOUT" "${pull[@]}" >"$dir/pull.log" 2>&1; then
    echo "pull failed: $(tail -3 "$dir/pull.log")" >"$dir/error"
    return 0
  fi
  now >"$dir/pulled"
  # runc keeps container state under /run/containerd/runc/<namespace> for every containerd:
  # ids unique to this script run never meet another run's containers.
  timeout "$TIMEOUT" "${run[@]}" "$ref" "fleet-$$-$k" 2>"$dir/run.err" | while IFS= read -r line; do
    echo "$line" >>"$dir/out"
    [[ "$line" == READY ]] && now >"$dir/ready"
  done || true
  [[ -s "$dir/ready" ]] || echo "no READY: $(tail -3 "$dir/run.err")" >"$dir/error"
  return 0
}

# measure LINK CASE ROUND: one run of all N apps at once; appends a line to $WORK/results.
measure() {
  local link=$1 case=$2 round=$3 snap=${SNAP[$2]} first start k pid
  start_case_stack "$snap"
  rm -rf "$WORK/apps"
  mkdir -p "$WORK/apps"
  first=$(($(wc -l <"$REG_LOG") + 1))
  APP_PIDS=()
  start=$(now)
  for k in $(seq 1 "$N"); do
    app_run "$k" "$snap" "${SUFFIX[$case]}" &
    APP_PIDS+=($!)
  done
  for pid in "${APP_PIDS[@]}"; do wait "$pid" || true; done
  APP_PIDS=()
  sleep 1 # the registry logs a request when it is done
  local bytes requests manager rss_daemon rss_manager rss_containerd mounts
  read -r bytes requests < <(blob_gets "$REG_LOG" "$first")
  manager=$(manager_pid)
  rss_daemon=$(peak_rss_mb "${SNAPSHOTTER_PID:-${REF_PID:-}}")
  rss_manager=$(peak_rss_mb "$manager")
  rss_containerd=$(peak_rss_mb "$CONTAINERD_PID")
  mounts=$(fuse_count)
  [[ -n "$LOGS_DIR" ]] && mkdir -p "$LOGS_DIR" &&
    tail -n +"$first" "$REG_LOG" >"$LOGS_DIR/$link-$case-$round.registry.log"
  stop_case_stack ${LOGS_DIR:+"$LOGS_DIR/$link-$case-$round"}

  local times=() failed=0 wall median slowest
  for k in $(seq 1 "$N"); do
    if [[ -s "$WORK/apps/$k/ready" ]]; then
      times+=("$(calc "$(cat "$WORK/apps/$k/ready") - $start")")
    else
      failed=$((failed + 1))
      echo "  app $k: $(cat "$WORK/apps/$k/error" 2>/dev/null || echo 'no result')"
    fi
  done
  if [[ ${#times[@]} -gt 0 ]]; then
    wall=$(printf '%s\n' "${times[@]}" | sort -g | tail -1)
    median=$(printf '%s\n' "${times[@]}" | median)
    slowest=$wall
  else
    wall=- median=- slowest=-
  fi
  printf '%-8s %-9s round %d: last READY %7ss, median app %7ss, %8s MB in %5d blob GETs, %2d lazy mounts, RSS daemon %s MB manager %s MB containerd %s MB%s\n' \
    "$link" "$case" "$round" "$wall" "$median" "$(mb "$bytes")" "$requests" "$mounts" \
    "$rss_daemon" "$rss_manager" "$rss_containerd" "$([[ $failed -gt 0 ]] && echo ", $failed apps FAILED")"
  echo "$link $case $round $wall $median $slowest $bytes $requests $mounts $rss_daemon $rss_manager $rss_containerd $failed" >>"$WORK/results"
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
    for case in "${CASES[@]}"; do measure "$link" "$case" "$round"; done
  done
  [[ $link == shaped ]] && teardown_shaped_link
done

# field LINK CASE COLUMN: median over the rounds ("-" if a round had no value).
field() {
  awk -v l="$1" -v c="$2" -v f="$3" '$1 == l && $2 == c { print $f }' "$WORK/results" |
    { vals=$(grep -v '^-$' || true); [[ -n "$vals" ]] && median <<<"$vals" || echo -; }
}

log "results: N=$N apps, ${BASE_MIB} MiB / ${BASE_FILES}-file base, median of $ROUNDS rounds, $(nproc) cores"
echo "| link | case | last READY s | median app s | slowest app s | slowest/median | registry MB | blob GETs | lazy mounts | RSS daemon MB | RSS manager MB | RSS containerd MB | failed apps | ours/ref time | ours/ref bytes |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for link in $LINKS; do
  for case in "${CASES[@]}"; do
    wall=$(field "$link" "$case" 4) bytes=$(field "$link" "$case" 7)
    time_ratio=- bytes_ratio=-
    if [[ $case == ours* ]]; then
      ref_case=ref${case#ours}
      time_ratio=$(ratio "$wall" "$(field "$link" "$ref_case" 4)")
      bytes_ratio=$(ratio "$bytes" "$(field "$link" "$ref_case" 7)")
    fi
    regmb=-
    [[ $bytes != - ]] && regmb=$(mb "$bytes")
    echo "| $link | $case | $wall | $(field "$link" "$case" 5) | $(field "$link" "$case" 6) | $(ratio "$(field "$link" "$case" 6)" "$(field "$link" "$case" 5)") | $regmb | $(field "$link" "$case" 8) | $(field "$link" "$case" 9) | $(field "$link" "$case" 10) | $(field "$link" "$case" 11) | $(field "$link" "$case" 12) | $(field "$link" "$case" 13) | $time_ratio | $bytes_ratio |"
  done
done
echo
echo "read MB (distinct bytes the $N entrypoints read): $(mb "$READ_BYTES"); lazy mounts with every layer lazy: $((N + 2))"
echo "all runs (link case round wall median slowest bytes GETs mounts rss_daemon rss_manager rss_containerd failed):"
cat "$WORK/results"
