#!/usr/bin/env bash
# End-to-end lazy-pull benchmark (issue 4, "Speed"): time until a large image's container
# is ready, and bytes fetched from the registry, for
#   overlayfs   the original gzip image: `ctr image pull` (containerd's built-in overlayfs
#               snapshotter: everything downloaded and unpacked), then `ctr run`;
#   esgz        the image converted by estargz-convert without prioritized files:
#               `ctr-remote image rpull --snapshotter stargz`, then `ctr run` (lazy);
#   esgz-prio   converted with --prioritized-files (the entrypoint's files, in reading
#               order, placed first and prefetched at mount), rpull + run as above.
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
#
# Env: SIZE_MIB image content in MiB (default 400), RUNS rounds per link (default 3),
#      RATE tbf rate (default 100mbit), DELAY_MS proxy delay per direction (default 10),
#      LINKS links to run (default "shaped loopback"), LOG_LEVEL daemon log level
#      (default info), LOGS_DIR if set, each run's daemon log and registry lines are
#      copied there, NET the /30 prefix (default 10.231.7).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib.sh

SIZE_MIB=${SIZE_MIB:-400}
RUNS=${RUNS:-3}
RATE=${RATE:-100mbit}
DELAY_MS=${DELAY_MS:-10}
LINKS=${LINKS:-shaped loopback}
LOG_LEVEL=${LOG_LEVEL:-info}
LOGS_DIR=${LOGS_DIR:-}
NET=${NET:-10.231.7}
CASES=(overlayfs esgz esgz-prio)
declare -A TAG=([overlayfs]=v1 [esgz]=esgz [esgz-prio]=esgz-prio)

log "build release binaries"
cargo build --release -q -p estargz-snapshotter -p estargz-convert
cargo build --release -q -p testkit --example make-image --example delay-proxy
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
CONVERT=$TARGET/estargz-convert
SNAPSHOTTER=$TARGET/estargz-snapshotter
MAKE_IMAGE=$TARGET/examples/make-image
DELAY_PROXY=$TARGET/examples/delay-proxy

WORK=$(mktemp -d /tmp/esgz-lazy.XXXXXX)
NS=esgzbench-$$
VETH_HOST=esgzb$$h
VETH_NS=esgzb$$n

# Stops the per-run stack, the shaped link's processes and devices, then lib.sh's cleanup.
bench_cleanup() {
  set +e
  stop_stack
  [[ -n "${PROXY_PID:-}" ]] && stop_pid "$PROXY_PID"
  [[ -n "${NS_REGISTRY_PID:-}" ]] && stop_pid "$NS_REGISTRY_PID"
  PROXY_PID= NS_REGISTRY_PID=
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL
  ip netns del "$NS" 2>/dev/null
  ip link del "$VETH_HOST" 2>/dev/null
  cleanup
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
mb() { calc "$1 / 1e6" 1; }

# unmount_under DIR: every mount at or below DIR, deepest first.
unmount_under() {
  awk -v root="$1" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo |
    awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- |
    while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}

# start_stack: a fresh estargz-snapshotter (root and cache) and containerd under $WORK/run,
# the daemon allowed plain HTTP to $REG.
start_stack() {
  local run=$WORK/run
  mkdir -p "$run/snapshotter"
  cat >"$run/snapshotter/config.toml" <<TOML
root = "$run/snapshotter/root"
address = "$run/snapshotter/snapshotter.sock"
log_level = "$LOG_LEVEL"
[remote]
plain_http = ["$REG"]
TOML
  "$SNAPSHOTTER" --config "$run/snapshotter/config.toml" >"$run/snapshotter/log" 2>&1 &
  SNAPSHOTTER_PID=$!
  wait_for 30 "snapshotter socket" test -S "$run/snapshotter/snapshotter.sock" ||
    { tail -20 "$run/snapshotter/log"; die "estargz-snapshotter did not start"; }
  WORK=$run start_containerd "[proxy_plugins]
  [proxy_plugins.stargz]
    type = \"snapshot\"
    address = \"$run/snapshotter/snapshotter.sock\""
}

stop_stack() {
  [[ -n "${CONTAINERD_PID:-}" ]] && stop_pid "$CONTAINERD_PID"
  [[ -n "${SNAPSHOTTER_PID:-}" ]] && stop_pid "$SNAPSHOTTER_PID"
  CONTAINERD_PID= SNAPSHOTTER_PID=
  if [[ -d "$WORK/run" ]]; then
    unmount_under "$WORK/run"
    rm -rf "$WORK/run"
  fi
}

# blob_gets LOG FIRST_LINE: "bytes requests" of the blob GETs logged from line FIRST_LINE.
blob_gets() {
  tail -n +"$2" "$1" | grep '"GET /v2/[^ ]*/blobs/' |
    sed -n 's/.*HTTP\/1.1" [0-9]* \([0-9]*\) .*/\1/p' |
    awk '{ s += $1; n++ } END { print s + 0, n + 0 }'
}

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
  start_stack
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

# The shaped link: namespace, veth pair with tbf on both ends, registry inside, delay proxy.
setup_shaped_link() {
  ip -o addr show | grep -qF " $NET." && die "$NET.0/30 is already in use on this host"
  ip netns add "$NS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_NS"
  ip link set "$VETH_NS" netns "$NS"
  ip addr add "$NET.1/30" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip netns exec "$NS" ip addr add "$NET.2/30" dev "$VETH_NS"
  ip netns exec "$NS" ip link set "$VETH_NS" up
  ip netns exec "$NS" ip link set lo up
  tc qdisc add dev "$VETH_HOST" root tbf rate "$RATE" burst 32kb latency 50ms
  ip netns exec "$NS" tc qdisc add dev "$VETH_NS" root tbf rate "$RATE" burst 32kb latency 50ms
  mkdir -p "$WORK/registry-ns"
  sed "s|addr: 127.0.0.1:.*|addr: $NET.2:5000|" "$WORK/registry/config.yml" >"$WORK/registry-ns/config.yml"
  ip netns exec "$NS" /usr/bin/docker-registry serve "$WORK/registry-ns/config.yml" \
    >"$WORK/registry-ns/log" 2>&1 &
  NS_REGISTRY_PID=$!
  wait_for 30 "registry in $NS" curl -sf "http://$NET.2:5000/v2/" ||
    { tail -20 "$WORK/registry-ns/log"; die "registry in the namespace did not start"; }
  local port
  port=$(free_port)
  "$DELAY_PROXY" "127.0.0.1:$port" "$NET.2:5000" "$DELAY_MS" >"$WORK/delay-proxy.log" 2>&1 &
  PROXY_PID=$!
  REG=127.0.0.1:$port
  REG_LOG=$WORK/registry-ns/log
  wait_for 30 "delay proxy" curl -sf "http://$REG/v2/" || die "delay proxy did not start"
}

teardown_shaped_link() {
  stop_pid "$PROXY_PID"
  stop_pid "$NS_REGISTRY_PID"
  PROXY_PID= NS_REGISTRY_PID=
  ip netns del "$NS"
  ip link del "$VETH_HOST" 2>/dev/null || true
}

# needed_bytes TAG: compressed bytes of the chunks of the read-set files in image TAG
# (from each layer's footer and TOC): what the entrypoint needs from the registry.
needed_bytes() {
  local manifest total=0 digest size url toc_offset n
  manifest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$LOOP_REG/v2/lazy/manifests/$1")
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
  digest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$LOOP_REG/v2/lazy/manifests/v1" | jq -r '.layers | max_by(.size) | .digest')
  curl -sf -o /dev/null -w '%{speed_download}' "http://$REG/v2/lazy/blobs/$digest"
}

start_registry
LOOP_REG=$REGISTRY

log "build the ${SIZE_MIB} MiB lazy-bench image and convert it twice"
"$MAKE_IMAGE" push "$LOOP_REG" lazy:v1 "lazy-bench:$SIZE_MIB" >/dev/null
"$MAKE_IMAGE" read-set "$SIZE_MIB" >"$WORK/read-set.txt"
"$CONVERT" "$LOOP_REG/lazy:v1" "$LOOP_REG/lazy:esgz" --plain-http --no-progress 2>/dev/null
"$CONVERT" "$LOOP_REG/lazy:v1" "$LOOP_REG/lazy:esgz-prio" --plain-http --no-progress \
  --prioritized-files "$WORK/read-set.txt" 2>/dev/null
declare -A IMAGE_BYTES NEEDED
for case in "${CASES[@]}"; do
  IMAGE_BYTES[$case]=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$LOOP_REG/v2/lazy/manifests/${TAG[$case]}" | jq '[.layers[].size] | add')
done
NEEDED[esgz]=$(needed_bytes esgz)
NEEDED[esgz-prio]=$(needed_bytes esgz-prio)
NEEDED[overlayfs]=${NEEDED[esgz]}
read_files=$(wc -l <"$WORK/read-set.txt")
echo "image layers: overlayfs $(mb "${IMAGE_BYTES[overlayfs]}") MB (gzip), esgz $(mb "${IMAGE_BYTES[esgz]}") MB, esgz-prio $(mb "${IMAGE_BYTES[esgz-prio]}") MB"
echo "entrypoint reads $read_files files: ${NEEDED[esgz]} bytes of chunks (esgz), ${NEEDED[esgz-prio]} (esgz-prio)"

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

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { awk -v l="$1" -v c="$2" -v f="$3" '$1 == l && $2 == c { print $f }' "$WORK/results" | median; }

# check TARGET VALUE LIMIT: records a target and whether VALUE <= LIMIT.
check() { targets+=("$1"); met+=("$(awk "BEGIN { print ($2 <= $3) ? \"yes\" : \"no\" }")"); }

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
    esac
    [[ $case == esgz-prio ]] && check "bytes <= 1.05x needed (${vs_needed}x)" "$vs_needed" 1.05
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
