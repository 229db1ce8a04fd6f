#!/usr/bin/env bash
# End-to-end lazy-read throughput benchmark (issue 5, "Speed"): sequential read of one big
# file of incompressible bytes through the daemon's FUSE mount, against the link and the
# local disk, all in the same run.
#
# The image (testkit preset read-bench:SIZE_MIB: one layer, one file /data/big.bin) is
# built as an OCI layout and converted by estargz-convert (default settings: 4 MiB chunks,
# gzip 9, no prioritized files, so nothing is prefetched at mount) into the registry. It is
# mounted lazily through containerd (`ctr-remote image rpull --snapshotter stargz`, a
# fresh containerd and daemon root per daemon run) and the file is read under the layer's
# FUSE mountpoint (<root>/snapshots/<id>/fs) with `dd bs=BS of=/dev/null`, the page cache
# dropped (`echo 3 >/proc/sys/vm/drop_caches`) before every measured read:
#   cold         over the shaped link (below), `[background_fetch] enable = false`, so
#                every chunk is fetched on demand by the read; a fresh daemon per round;
#                compared with the link bandwidth (curl downloading LINK_PROBE_MIB MiB of
#                the same blob over the same path, once per round, right before the read);
#   warm-pt      the registry on loopback, background fetch unthrottled until the daemon
#                logs "layer fully cached", `[fuse] passthrough = true`, log level debug (for the daemon crate) so
#                that "opened with passthrough" confirms each open; one unmeasured read
#                first (it starts the passthrough backing copy, which is awaited), then
#                RUNS reads;
#   warm-fuse    the same with `passthrough = false` (another daemon run): every read is
#                served by the daemon from its chunk cache (memory, then disk);
#   local        the same bytes copied (from the mount, after the first warm read) to a
#                plain directory on the same disk ($WORK), read with the same dd in each
#                warm round (alternately before and after the read through the mount),
#                so both see the same machine load; each warm case is compared with the
#                local reads of its own daemon run (local@warm-pt, local@warm-fuse).
# Reported: median MB/s (1e6 bytes/s) of RUNS cold reads and WARM_RUNS warm/local reads, dd's and the daemon's CPU seconds,
# registry requests of the cold reads, and the ratios against the targets: cold >= 0.8x
# link bandwidth, warm-pt >= 0.9x local.
#
# Shaped link as in benches/lazy_pull.sh: docker-registry in its own network namespace
# behind a veth pair with tbf at RATE both ways, reached through testkit's delay-proxy on
# 127.0.0.1 (DELAY_MS each way). Only 127.0.0.0/8 and the namespace's /30 are used; the
# namespace, veth, qdiscs, processes, mounts and temp dirs are removed on exit.
#
# Env: SIZE_MIB file size in MiB (default 1024), RUNS cold reads (default 3), WARM_RUNS
#      warm rounds per passthrough setting (default 5: a read takes about a second and
#      the disk is noisy), BS dd block size (default 1M), RATE (default 100mbit), DELAY_MS (default 10),
#      CASES cases to run (default "cold warm-pt warm-fuse"; local is measured with each
#      warm case), LINK_PROBE_MIB (default 128), LOGS_DIR if set,
#      daemon logs and the cold runs' registry lines are copied there, FUSE_LOG_LEVEL the
#      daemon log level of the warm-fuse run (default info; "info,estargz_snapshotter=debug"
#      logs every FUSE read, for counting them),
#      NET the /30 prefix (default 10.231.8).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh
source benches/lib.sh

SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
WARM_RUNS=${WARM_RUNS:-5}
FUSE_LOG_LEVEL=${FUSE_LOG_LEVEL:-info}
BS=${BS:-1M}
RATE=${RATE:-100mbit}
DELAY_MS=${DELAY_MS:-10}
CASES=${CASES:-cold warm-pt warm-fuse}
LINK_PROBE_MIB=${LINK_PROBE_MIB:-128}
LOGS_DIR=${LOGS_DIR:-}
NET=${NET:-10.231.8}
LOG_LEVEL=info
FILE_PATH=data/big.bin # testkit's READ_BENCH_FILE

bench_init read

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# big_file: the file under the only FUSE layer mount of the current stack.
big_file() {
  local mounts
  mounts=$(fuse_mounts)
  [[ $(wc -l <<<"$mounts") -eq 1 && -n "$mounts" ]] ||
    { tail -20 "$WORK/run/snapshotter/log"; die "expected one FUSE layer mount, got: $mounts"; }
  echo "$mounts/$FILE_PATH"
}

# timed_read CASE ROUND FILE [DAEMON_PID]: drops the page cache, reads FILE with dd and
# appends "case round seconds MB/s dd_cpu_s daemon_cpu_s" to $WORK/results.
timed_read() {
  local case=$1 round=$2 file=$3 pid=${4:-} before=0 after=0 bytes real user sys
  drop_caches
  [[ -n "$pid" ]] && before=$(cpu_seconds "$pid")
  local TIMEFORMAT='%3R %3U %3S'
  { time dd if="$file" of=/dev/null bs="$BS" 2>"$WORK/dd.err"; } 2>"$WORK/time.out"
  [[ -n "$pid" ]] && after=$(cpu_seconds "$pid")
  read -r real user sys <"$WORK/time.out"
  bytes=$(awk '/bytes/ { print $1; exit }' "$WORK/dd.err")
  [[ "$bytes" -eq $((SIZE_MIB * 1048576)) ]] || { cat "$WORK/dd.err"; die "$case: short read"; }
  local rate
  rate=$(calc "$bytes / $real / 1e6" 1)
  printf '%-9s round %d: %7.2fs %7s MB/s (dd CPU %5.2fs, daemon CPU %5.2fs)\n' \
    "$case" "$round" "$real" "$rate" "$(calc "$user + $sys" 2)" "$(calc "$after - $before" 2)"
  echo "$case $round $real $rate $(calc "$user + $sys" 2) $(calc "$after - $before" 2)" >>"$WORK/results"
}

# save_logs NAME: the daemon log (and for the shaped link the registry lines from line
# $FIRST_LINE) into LOGS_DIR.
save_logs() {
  [[ -n "$LOGS_DIR" ]] || return 0
  mkdir -p "$LOGS_DIR"
  cp "$WORK/run/snapshotter/log" "$LOGS_DIR/$1.daemon.log"
  [[ -n "${FIRST_LINE:-}" ]] && tail -n +"$FIRST_LINE" "$REG_LOG" >"$LOGS_DIR/$1.registry.log"
  return 0
}

rpull() { ctr_remote image rpull --plain-http --snapshotter stargz "$REG/read:esgz" >/dev/null; }

# cold_round ROUND: link probe, then a fresh daemon without background fetch reads the file.
cold_round() {
  local round=$1 speed file first bytes requests pulled_bytes
  speed=$(download_speed "http://$REG/v2/read/blobs/$LAYER" "0-$((LINK_PROBE_MIB * 1048576 - 1))")
  echo "cold      round $round: link $(calc "$speed / 1e6" 2) MB/s ($(calc "$speed * 8 / 1e6" 1) Mbit/s, curl $LINK_PROBE_MIB MiB)"
  echo "link $round $speed" >>"$WORK/results"
  start_stack "[background_fetch]
enable = false"
  first=$(($(wc -l <"$REG_LOG") + 1))
  rpull
  file=$(big_file)
  sleep 0.5
  read -r pulled_bytes _ < <(blob_gets "$REG_LOG" "$first")
  timed_read cold "$round" "$file" "$SNAPSHOTTER_PID"
  sleep 1 # the registry logs a request when it is done
  read -r bytes requests < <(blob_gets "$REG_LOG" "$first")
  echo "cold      round $round: registry $(mb "$bytes") MB in $requests blob GETs ($(mb "$pulled_bytes") MB at mount)"
  echo "cold-registry $round $bytes $requests $pulled_bytes" >>"$WORK/results"
  FIRST_LINE=$first save_logs "cold-$round"
  stop_stack
}

# warm PASSTHROUGH: one daemon run on loopback; waits until the layer is fully cached,
# reads once unmeasured (the first warm run then copies the file to $LOCAL), then RUNS
# WARM_RUNS rounds of a local read and a measured read through the mount.
warm() {
  local pt=$1 case file log mark started
  case=$([[ $pt == true ]] && echo warm-pt || echo warm-fuse)
  REG=$LOOP_REG REG_LOG=$WORK/registry/log
  LOG_LEVEL=$([[ $pt == true ]] && echo "info,estargz_snapshotter=debug" || echo "$FUSE_LOG_LEVEL") start_stack "[background_fetch]
enable = true
bytes_per_second = 0
quiet = 0.1
start_delay = 0
[fuse]
passthrough = $pt"
  log=$WORK/run/snapshotter/log
  started=$(now)
  rpull
  file=$(big_file)
  wait_for 900 "layer fully cached" grep -q "layer fully cached" "$log" ||
    { tail -20 "$log"; die "background fetch did not finish"; }
  echo "$case: layer fully cached $(calc "$(now) - $started" 1) s after the pull started"
  timed_read "$case-first" 0 "$file" "$SNAPSHOTTER_PID"
  if [[ $pt == true ]]; then
    # The first open is served from the cached chunks while the backing copy is written.
    wait_for 120 "backing file assembled" grep -q "backing file assembled" "$log" ||
      { tail -20 "$log"; die "no passthrough backing file"; }
  fi
  if [[ ! -f "$LOCAL" ]]; then
    mkdir -p "$(dirname "$LOCAL")"
    cp "$file" "$LOCAL"
    sync
  fi
  local dev
  dev=$(awk -v m="$(dirname "$(dirname "$file")")" '$5 == m { print $3 }' /proc/self/mountinfo)
  echo "$case: FUSE mount read_ahead_kb $(cat "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || echo ?)," \
    "local disk $(df --output=source "$LOCAL" | tail -1) read_ahead_kb" \
    "$(cat "/sys/block/$(basename "$(df --output=source "$LOCAL" | tail -1)")/queue/read_ahead_kb" 2>/dev/null || echo ?)"
  mark=$(wc -l <"$log")
  for round in $(seq 1 "$WARM_RUNS"); do
    if ((round % 2)); then
      timed_read "local@$case" "$round" "$LOCAL"
      timed_read "$case" "$round" "$file" "$SNAPSHOTTER_PID"
    else
      timed_read "$case" "$round" "$file" "$SNAPSHOTTER_PID"
      timed_read "local@$case" "$round" "$LOCAL"
    fi
  done
  if [[ $FUSE_LOG_LEVEL != info && $pt == false ]]; then
    tail -n +"$((mark + 1))" "$log" | grep "layer read" | sed 's/\x1b\[[0-9;]*m//g' |
      sed -n 's/.* len=\([0-9]*\).*/\1/p' |
      awk '{ n++; s += $1; c[$1]++ } END { printf "%s: %d FUSE reads reached the daemon, %.0f KiB on average; by size:", "'"$case"'", n, s / n / 1024; for (k in c) printf " %d KiB x %d", k / 1024, c[k]; print "" }'
  fi
  if [[ $pt == true ]]; then
    grep -q "kernel lacks FUSE passthrough" "$log" && die "this kernel has no FUSE passthrough"
    local opened reads
    opened=$(tail -n +"$((mark + 1))" "$log" | grep -c "opened with passthrough" || true)
    reads=$(tail -n +"$((mark + 1))" "$log" | grep -c "layer read" || true)
    echo "$case: measured reads: $opened opens with passthrough, $reads reads served by the daemon"
    [[ $opened -ge 1 && $reads -eq 0 ]] || die "$case: the reads did not use passthrough"
  fi
  save_logs "$case"
  stop_stack
}

start_registry
LOOP_REG=$REGISTRY REG=$REGISTRY REG_LOG=$WORK/registry/log
LOCAL=$WORK/local/big.bin

log "build the read-bench:$SIZE_MIB image (one $SIZE_MIB MiB file) and convert it"
"$MAKE_IMAGE" layout "$WORK/src" v1 "read-bench:$SIZE_MIB" >/dev/null
"$CONVERT" "oci:$WORK/src:v1" "$LOOP_REG/read:esgz" --plain-http --no-progress 2>/dev/null
rm -rf "$WORK/src"
LAYER=$(manifest read esgz | jq -r '.layers[0].digest')
echo "layer $LAYER: $(mb "$(manifest read esgz | jq '.layers[0].size')") MB compressed"

: >"$WORK/results"
if [[ " $CASES " == *" cold "* ]]; then
  log "cold reads over the shaped link: netns $NS at $NET.2:5000, tbf $RATE both ways, +${DELAY_MS} ms each way"
  setup_shaped_link
  for round in $(seq 1 "$RUNS"); do cold_round "$round"; done
  teardown_shaped_link
fi
for pt in true false; do
  case=$([[ $pt == true ]] && echo warm-pt || echo warm-fuse)
  [[ " $CASES " == *" $case "* ]] || continue
  log "$case: passthrough = $pt, cached from the loopback registry"
  warm "$pt"
done

col() { awk -v c="$1" -v f="$2" '$1 == c { print $f }' "$WORK/results" | median; }
log "results ($SIZE_MIB MiB file, dd bs=$BS, medians of $RUNS cold / $WARM_RUNS warm reads, $(nproc) cores)"
link=$(col link 3)
echo "| case | MB/s | s | dd CPU s | daemon CPU s | compared with | ratio | target | met? |"
echo "|---|---:|---:|---:|---:|---|---:|---|---|"
for case in cold warm-pt local@warm-pt warm-fuse local@warm-fuse; do
  rate=$(col "$case" 4)
  [[ -n "$rate" ]] || continue
  against=- ratio=- target=- met=-
  case $case in
    cold)
      against="link $(calc "$link / 1e6" 1) MB/s"
      ratio=$(calc "$rate * 1e6 / $link" 2) target=">= 0.8x link" ;;
    warm-*)
      against="local $(col "local@$case" 4) MB/s"
      ratio=$(calc "$rate / $(col "local@$case" 4)" 2)
      [[ $case == warm-pt ]] && target=">= 0.9x local" ;;
  esac
  case $target in
    ">= 0.8x link") met=$(awk "BEGIN { print ($ratio >= 0.8) ? \"yes\" : \"no\" }") ;;
    ">= 0.9x local") met=$(awk "BEGIN { print ($ratio >= 0.9) ? \"yes\" : \"no\" }") ;;
  esac
  echo "| $case | $rate | $(col "$case" 3) | $(col "$case" 5) | $(col "$case" 6) | $against | $ratio | $target | $met |"
done
echo
[[ -n "$(col cold-registry 3)" ]] &&
  echo "cold: registry $(mb "$(col cold-registry 3)") MB in $(col cold-registry 4) blob GETs per read (median), link $(calc "$link * 8 / 1e6" 1) Mbit/s"
echo "all measurements:"
cat "$WORK/results"
