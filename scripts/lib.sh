# Shared shell helpers for scripts/demo.sh and benches/*.sh: a throw-away docker-registry
# and containerd under one work directory, and their cleanup. Source it; set WORK first.

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "error: $*" >&2; exit 1; }

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq 1 $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out after ${seconds}s waiting for $what" >&2
  return 1
}

# start_registry: docker-registry on a free port; sets REGISTRY (host:port) and REGISTRY_PID.
start_registry() {
  local port
  port=$(free_port)
  mkdir -p "$WORK/registry"
  cat >"$WORK/registry/config.yml" <<YAML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/registry/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
  /usr/bin/docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
  REGISTRY_PID=$!
  REGISTRY=127.0.0.1:$port
  wait_for 30 "registry at $REGISTRY" curl -sf "http://$REGISTRY/v2/" ||
    { tail -20 "$WORK/registry/log"; die "registry did not start"; }
}

# start_containerd [EXTRA_TOML]: containerd rooted in $WORK/containerd; sets CONTAINERD_SOCK, CONTAINERD_PID.
start_containerd() {
  local dir=$WORK/containerd
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
${1:-}
TOML
  /usr/bin/containerd --config "$dir/config.toml" >"$dir/log" 2>&1 &
  CONTAINERD_PID=$!
  CONTAINERD_SOCK=$dir/containerd.sock
  wait_for 30 "containerd socket" test -S "$CONTAINERD_SOCK" ||
    { tail -20 "$dir/log"; die "containerd did not start"; }
}

ctr_() { /usr/bin/ctr --address "$CONTAINERD_SOCK" --namespace demo "$@"; }
ctr_remote() { /usr/bin/ctr-remote --address "$CONTAINERD_SOCK" --namespace demo "$@"; }

# stop_pid PID: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# cleanup: stop what we started, unmount everything under $WORK (deepest first), remove it.
cleanup() {
  [[ -n "${CONTAINERD_PID:-}" ]] && stop_pid "$CONTAINERD_PID"
  # The snapshotter unmounts its FUSE layers on SIGTERM.
  [[ -n "${SNAPSHOTTER_PID:-}" ]] && stop_pid "$SNAPSHOTTER_PID"
  [[ -n "${REGISTRY_PID:-}" ]] && stop_pid "$REGISTRY_PID"
  if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
    awk -v root="$WORK" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo |
      awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- |
      while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    rm -rf "$WORK"
  fi
}
