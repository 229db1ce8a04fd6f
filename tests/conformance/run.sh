#!/usr/bin/env bash
# Runs containerd's snapshotter conformance suite (containerd 1.6 snapshots/testsuite)
# against estargz-snapshotter through containerd's snapshots proxy.
# Needs root and the Debian packages golang-go and golang-github-containerd-containerd-dev
# (the suite is built in GOPATH mode against /usr/share/gocode).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

cargo build --manifest-path "$repo/Cargo.toml" -p estargz-snapshotter --bin estargz-snapshotter
export ESTARGZ_SNAPSHOTTER_BIN="$target/debug/estargz-snapshotter"

cd "$here"
GO111MODULE=off GOPATH=/usr/share/gocode go test -count=1 -v . "$@" 2>&1 |
    tee "${CONFORMANCE_LOG:-/dev/null}"
