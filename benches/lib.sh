# Shared helpers of the end-to-end lazy benchmarks (benches/lazy_pull.sh, benches/lazy_read.sh):
# release binaries, a fresh estargz-snapshotter + containerd per measured run, the shaped
# link (network namespace + veth + tbf + delay proxy), registry log byte counting, numbers.
# Source it after scripts/lib.sh; call bench_init first.
#
# Knobs read here (set by the sourcing script): RATE (tbf rate), DELAY_MS (proxy delay per
# direction), NET (the namespace's /30 prefix), LOG_LEVEL (daemon log level).

# bench_init NAME: builds the release binaries (sets CONVERT, SNAPSHOTTER, MAKE_IMAGE,
# DELAY_PROXY), makes WORK and the namespace/veth names, installs the cleanup trap.
# OUR_BIN=path measures that prebuilt estargz-snapshotter instead of building this tree's
# (e.g. a copy of an older commit's release binary, for a before/after run in one sitting).
bench_init() {
  log "build release binaries"
  local target=${CARGO_TARGET_DIR:-$ROOT/target}/release
  if [[ -n "${OUR_BIN:-}" ]]; then
    if [[ ! -x $OUR_BIN ]]; then
      echo "OUR_BIN=$OUR_BIN is not an executable file" >&2
      exit 1
    fi
    cargo build --release -q -p estargz-convert
    SNAPSHOTTER=$(readlink -f "$OUR_BIN")
    log "daemon under test: $SNAPSHOTTER (OUR_BIN)"
  else
    cargo build --release -q -p estargz-snapshotter -p estargz-convert
    SNAPSHOTTER=$target/estargz-snapshotter
  fi
  cargo build --release -q -p testkit --example make-image --example delay-proxy
  CONVERT=$target/estargz-convert
  MAKE_IMAGE=$target/examples/make-image
  DELAY_PROXY=$target/examples/delay-proxy

  WORK=$(mktemp -d "/tmp/esgz-$1.XXXXXX")
  NS=esgzbench-$$
  VETH_HOST=esgzb$$h
  VETH_NS=esgzb$$n
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

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

now() { echo "$EPOCHREALTIME"; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
mb() { calc "$1 / 1e6" 1; }
# median: of the numbers on stdin, one a line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# unmount_under DIR: every mount at or below DIR, deepest first.
unmount_under() {
  awk -v root="$1" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo |
    awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- |
    while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}

# start_stack [EXTRA_TOML]: a fresh estargz-snapshotter (root and cache) and containerd under
# $WORK/run, the daemon allowed plain HTTP to $REG; EXTRA_TOML is appended to its config.
start_stack() {
  local run=$WORK/run
  mkdir -p "$run/snapshotter"
  cat >"$run/snapshotter/config.toml" <<TOML
root = "$run/snapshotter/root"
address = "$run/snapshotter/snapshotter.sock"
log_level = "$LOG_LEVEL"
[remote]
plain_http = ["$REG"]
${1:-}
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

# stop_stack [RECORD_DEST]: stops containerd and the daemon and removes $WORK/run; with
# RECORD_DEST, the daemon's record directory is copied there first (after the daemon exited).
stop_stack() {
  [[ -n "${CONTAINERD_PID:-}" ]] && stop_pid "$CONTAINERD_PID"
  [[ -n "${SNAPSHOTTER_PID:-}" ]] && stop_pid "$SNAPSHOTTER_PID"
  CONTAINERD_PID= SNAPSHOTTER_PID=
  if [[ -n "${1:-}" ]]; then
    mkdir -p "$1"
    cp -r "$WORK/run/snapshotter/root/record/." "$1/"
  fi
  if [[ -d "$WORK/run" ]]; then
    unmount_under "$WORK/run"
    rm -rf "$WORK/run"
  fi
}

# fuse_mounts: the daemon's FUSE layer mountpoints under $WORK/run, one a line.
fuse_mounts() {
  awk -v root="$WORK/run/" 'index($5, root) == 1 && / - fuse(\.estargz)? estargz / { print $5 }' \
    /proc/self/mountinfo
}

# cpu_seconds PID: user + system CPU time of PID so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# blob_gets LOG FIRST_LINE: "bytes requests" of the blob GETs logged from line FIRST_LINE.
blob_gets() {
  tail -n +"$2" "$1" | grep '"GET /v2/[^ ]*/blobs/' |
    sed -n 's/.*HTTP\/1.1" [0-9]* \([0-9]*\) .*/\1/p' |
    awk '{ s += $1; n++ } END { print s + 0, n + 0 }'
}

# The shaped link: namespace, veth pair with tbf on both ends, a docker-registry inside
# serving the storage of the loopback one ($WORK/registry), and the delay proxy on
# 127.0.0.1. Sets REG (the proxy's host:port) and REG_LOG (the namespaced registry's log).
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

# manifest REPO TAG: the image manifest from the loopback registry ($LOOP_REG).
manifest() {
  curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$LOOP_REG/v2/$1/manifests/$2"
}

# download_speed URL [RANGE]: bytes/s of curl downloading URL (or bytes RANGE of it).
download_speed() {
  curl -sf -o /dev/null ${2:+-r "$2"} -w '%{speed_download}' "$1"
}
