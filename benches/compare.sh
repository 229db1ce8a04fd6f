# Helpers of the benchmarks that compare against the Go reference (benches/fleet.sh,
# benches/ondemand.sh): one containerd per measured run with two proxy plugins, `stargz`
# (ours) and `refstargz` (the reference, /work/shared/reference/build.sh), our daemon
# configured as deploy/config.toml (fuse manager included) in temp dirs, peak RSS of the
# processes, and a cache of built and converted images under /var/tmp.
# Source it after scripts/lib.sh and benches/lib.sh; call compare_init first.
#
# Knobs read here: REF_BUILD (the reference's build script, default
# /work/shared/reference/build.sh), REF_BIN (default /usr/local/bin/ref-stargz-grpc),
# OUR_CONFIG (our daemon's config file, default deploy/config.toml; root, address,
# log_level and plain_http are set for the run), OUR_SET (overrides of that file,
# space-separated `section.key=value` with TOML values, e.g. "fuse.manager=false
# background_fetch.enable=false"; `key=value` for top-level keys), REF_CONFIG (extra
# TOML for the reference's config, default empty: its defaults), CACHE_DIR (default
# /var/tmp/esgz-bench; "" disables the image cache), TIMEOUT (seconds any one pull or
# run may take, default 600).

REF_BUILD=${REF_BUILD:-/work/shared/reference/build.sh}
REF_BIN=${REF_BIN:-/usr/local/bin/ref-stargz-grpc}
OUR_CONFIG=${OUR_CONFIG:-$ROOT/deploy/config.toml}
OUR_SET=${OUR_SET:-}
REF_CONFIG=${REF_CONFIG:-}
CACHE_DIR=${CACHE_DIR-/var/tmp/esgz-bench}
TIMEOUT=${TIMEOUT:-600}

# compare_init NAME: bench_init, the reference binary, the cleanup of what we add.
compare_init() {
  bench_init "$1"
  if [[ -f "$REF_BUILD" ]]; then
    log "build the Go reference ($REF_BUILD)"
    bash "$REF_BUILD" "$REF_BIN" >/dev/null || die "building the reference failed"
  fi
  [[ -x "$REF_BIN" ]] || die "no reference binary at $REF_BIN"
  trap compare_cleanup EXIT
}

compare_cleanup() {
  set +e
  stop_case_stack
  bench_cleanup
}

# set_toml FILE KEY=VALUE: sets KEY (`section.key` or a top-level `key`) in FILE, in
# place of its line (commented or not) in that section, else at the section's end.
set_toml() {
  local file=$1 assignment=$2 path value section key
  path=${assignment%%=*} value=${assignment#*=}
  if [[ $path == *.* ]]; then section="[${path%.*}]" key=${path##*.}; else section="" key=$path; fi
  awk -v sec="$section" -v key="$key" -v val="$value" '
    function emit() { print key " = " val; done = 1 }
    BEGIN { insec = (sec == "") }
    /^\[/ { if (insec && !done) emit(); insec = ($0 == sec) }
    insec && !done && $0 ~ ("^#? *" key " *=") { emit(); next }
    { print }
    END { if (!done) { if (!insec) print sec; emit() } }' "$file" >"$file.new"
  mv "$file.new" "$file"
}

# our_config DIR: writes DIR/config.toml for our daemon (root and socket under DIR).
our_config() {
  local dir=$1 file=$1/config.toml setting
  cp "$OUR_CONFIG" "$file"
  set_toml "$file" "root=\"$dir/root\""
  set_toml "$file" "address=\"$dir/snapshotter.sock\""
  set_toml "$file" "log_level=\"$LOG_LEVEL\""
  set_toml "$file" "remote.plain_http=[\"$REG\"]"
  for setting in $OUR_SET; do set_toml "$file" "$setting"; done
}

# start_case_stack SNAPSHOTTER: containerd under $WORK/run with both proxy plugins, and
# the daemon SNAPSHOTTER needs (stargz: ours, refstargz: the reference, overlayfs: none).
start_case_stack() {
  local run=$WORK/run
  mkdir -p "$run/ours" "$run/ref"
  case $1 in
    stargz)
      our_config "$run/ours"
      "$SNAPSHOTTER" --config "$run/ours/config.toml" >"$run/ours/log" 2>&1 &
      SNAPSHOTTER_PID=$!
      wait_for 30 "our socket" test -S "$run/ours/snapshotter.sock" ||
        { tail -20 "$run/ours/log"; die "estargz-snapshotter did not start"; } ;;
    refstargz)
      printf '%s\n' "$REF_CONFIG" >"$run/ref/config.toml"
      "$REF_BIN" -address "$run/ref/ref.sock" -root "$run/ref/root" \
        -config "$run/ref/config.toml" >"$run/ref/log" 2>&1 &
      REF_PID=$!
      wait_for 30 "reference socket" test -S "$run/ref/ref.sock" ||
        { tail -20 "$run/ref/log"; die "ref-stargz-grpc did not start"; } ;;
    overlayfs) ;;
    *) die "unknown snapshotter $1" ;;
  esac
  WORK=$run start_containerd "[proxy_plugins]
  [proxy_plugins.stargz]
    type = \"snapshot\"
    address = \"$run/ours/snapshotter.sock\"
  [proxy_plugins.refstargz]
    type = \"snapshot\"
    address = \"$run/ref/ref.sock\""
}

# manager_pid: our fuse manager's pid if it runs for this run's root (checked by its
# command line, so that a stale pid file never names another process).
manager_pid() {
  local root=$WORK/run/ours/root pid
  pid=$(cat "$root/fuse-manager.pid" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--root $root .*fuse-manager" && echo "$pid"
  return 0
}

# peak_rss_mb PID: VmHWM (peak resident set) of PID in MB, "-" without PID.
peak_rss_mb() {
  [[ -n "${1:-}" ]] || { echo -; return; }
  awk '/^VmHWM:/ { printf "%.0f", $2 * 1024 / 1e6; found = 1 } END { if (!found) print "-" }' \
    "/proc/$1/status" 2>/dev/null || echo -
}

# fuse_count: FUSE mounts under $WORK/run (lazily served layers of either daemon).
fuse_count() {
  awk -v root="$WORK/run/" 'index($5, root) == 1 && $0 ~ / - fuse[.a-zA-Z]* / { n++ } END { print n + 0 }' \
    /proc/self/mountinfo
}

# stop_case_stack [LOGS_PREFIX]: stops containerd, the daemons and our fuse manager, copies
# their logs to LOGS_PREFIX.* when given, unmounts and removes $WORK/run.
stop_case_stack() {
  local manager sock=$WORK/run/containerd/containerd.sock task pid
  manager=$(manager_pid)
  # Containers still running (an interrupted run) are killed while containerd is up;
  # shims of this containerd that outlive it anyway are stopped by its socket path.
  if [[ -n "${CONTAINERD_PID:-}" ]]; then
    for task in $(timeout 10 /usr/bin/ctr --address "$sock" --namespace demo tasks ls -q 2>/dev/null); do
      timeout 10 /usr/bin/ctr --address "$sock" --namespace demo tasks kill -a -s SIGKILL "$task" >/dev/null 2>&1
      timeout 10 /usr/bin/ctr --address "$sock" --namespace demo tasks delete -f "$task" >/dev/null 2>&1
    done
    stop_pid "$CONTAINERD_PID"
  fi
  for pid in $(pgrep -f -x -- "/usr/bin/containerd-shim-runc-v2 -namespace demo -id .* -address $sock" || true); do
    stop_pid "$pid"
  done
  [[ -n "${SNAPSHOTTER_PID:-}" ]] && stop_pid "$SNAPSHOTTER_PID"
  [[ -n "$manager" ]] && stop_pid "$manager"
  [[ -n "${REF_PID:-}" ]] && stop_pid "$REF_PID"
  CONTAINERD_PID= SNAPSHOTTER_PID= REF_PID=
  [[ -d "$WORK/run" ]] || return 0
  if [[ -n "${1:-}" ]]; then
    mkdir -p "$(dirname "$1")"
    [[ -s "$WORK/run/ours/log" ]] && cp "$WORK/run/ours/log" "$1.ours.log"
    [[ -s "$WORK/run/ours/root/fuse-manager.log" ]] && cp "$WORK/run/ours/root/fuse-manager.log" "$1.manager.log"
    [[ -s "$WORK/run/ref/log" ]] && cp "$WORK/run/ref/log" "$1.ref.log"
    cp "$WORK/run/containerd/log" "$1.containerd.log" 2>/dev/null
  fi
  unmount_under "$WORK/run"
  rm -rf "$WORK/run"
}

# image_cache NAME PARAMS BUILD_FUNCTION: fills the loopback registry ($LOOP_REG, storage
# $WORK/registry/storage) with NAME's images: from the cache entry for PARAMS and the
# current make-image and estargz-convert binaries if there is one, else by calling
# BUILD_FUNCTION (which pushes and converts through $LOOP_REG) and storing the result.
# The key: PARAMS, testkit's image sources and Cargo.lock, the estargz-convert binary.
# Keeps the newest 2 entries per NAME. Sets LOOP_REG.
image_cache() {
  local name=$1 params=$2 build=$3 key entry
  # The images depend on testkit's image code (its sources, not the binary, which any
  # testkit change rebuilds) and on the converter binary.
  key=$( { echo "$params"; cat "$ROOT"/testkit/src/image/*.rs "$ROOT"/testkit/examples/make-image.rs \
    "$ROOT/Cargo.lock" | sha256sum; sha256sum "$CONVERT" | cut -d' ' -f1; } | sha256sum | cut -c1-16)
  entry=$CACHE_DIR/$name-$key
  if [[ -n "$CACHE_DIR" && -d "$entry/storage" ]]; then
    log "images from the cache $entry"
    mkdir -p "$WORK/registry/storage"
    # Blob data hard-linked (the registry never rewrites it), the rest copied.
    cp -al "$entry/storage/docker" "$WORK/registry/storage/" 2>/dev/null ||
      cp -a "$entry/storage/docker" "$WORK/registry/storage/"
    rm -rf "$WORK/registry/storage/docker/registry/v2/repositories"
    cp -a "$entry/storage/docker/registry/v2/repositories" "$WORK/registry/storage/docker/registry/v2/"
    touch "$entry"
    start_registry
    LOOP_REG=$REGISTRY
    return 0
  fi
  start_registry
  LOOP_REG=$REGISTRY
  "$build"
  [[ -n "$CACHE_DIR" ]] || return 0
  mkdir -p "$CACHE_DIR"
  local tmp
  tmp=$(mktemp -d "$CACHE_DIR/.$name-$key.XXXXXX")
  cp -a "$WORK/registry/storage" "$tmp/storage"
  if mv -T "$tmp" "$entry" 2>/dev/null; then
    log "images cached in $entry ($(du -sh "$entry" | cut -f1))"
  else
    rm -rf "$tmp"
  fi
  ls -dt "$CACHE_DIR/$name-"* 2>/dev/null | tail -n +3 | xargs -r rm -rf
}

# retag REPO DIGEST TAG: tags the manifest DIGEST of $LOOP_REG/REPO as TAG.
retag() {
  local type=application/vnd.oci.image.manifest.v1+json
  curl -sf -H "Accept: $type" "http://$LOOP_REG/v2/$1/manifests/$2" -o "$WORK/retag.json" ||
    die "get manifest $1@$2"
  curl -sf -X PUT -H "Content-Type: $type" --data-binary "@$WORK/retag.json" \
    "http://$LOOP_REG/v2/$1/manifests/$3" >/dev/null || die "put manifest $1:$3"
}

# convert IMAGE DST [PRIORITIZED_LIST]: estargz-convert $LOOP_REG/IMAGE to $LOOP_REG/DST.
convert_image() {
  "$CONVERT" "$LOOP_REG/$1" "$LOOP_REG/$2" --plain-http --no-progress \
    ${3:+--prioritized-files "$3"} >/dev/null 2>"$WORK/convert.log" ||
    { tail -20 "$WORK/convert.log"; die "converting $1 failed"; }
}

# ratio A B: A / B with two decimals, "-" when either is missing or B is 0.
ratio() {
  if [[ -z "${1:-}" || -z "${2:-}" || "$1" == - || "$2" == - ]]; then echo -; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'
}
