#!/usr/bin/env bash
# The project's full check: dependencies, formatting, lints, and every test (integration
# tests start a real docker-registry and containerd, so run as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

step() { echo; echo "==> $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace --no-fail-fast

step "fuzz (scripts/fuzz.sh: 24 s per target, about 2 minutes)"
bash scripts/fuzz.sh 24
