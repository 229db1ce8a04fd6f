#!/usr/bin/env bash
# The project's full check: dependencies, formatting, lints, and every test (integration
# tests start a real docker-registry and containerd, so run as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

step() { echo; echo "==> $*"; df -h . | tail -n 1; }

# A one-shot build gains nothing from incremental state, which would double the disk used.
export CARGO_INCREMENTAL=0

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace --no-fail-fast

step "fuzz (scripts/fuzz.sh: 24 s per target, about 2 minutes)"
bash scripts/fuzz.sh 24
