#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 20 s each) over the checked-in
# seed corpus. New inputs go to a temporary corpus dir, so fuzz/corpus stays untouched.
# Exits non-zero on the first crash, printing the crashing input's path.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain use them.
# FUZZ_SANITIZER (default none: safe Rust, and a much faster build) is passed to
# `cargo fuzz --sanitizer`; set it to "address" for ASan.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=(footer toc index reader tar soci)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "==> building fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

for target in "${targets[@]}"; do
    echo "==> fuzz $target for ${seconds}s"
    mkdir -p "$work/$target" "$work/artifacts/$target"
    log="$work/$target.log"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" \
        "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=1048576 \
        -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$target/" >"$log" 2>&1; then
        tail -n 40 "$log"
        keep="fuzz/artifacts/$target"
        mkdir -p "$keep"
        cp "$work/artifacts/$target/"* "$keep/" 2>/dev/null || true
        echo
        echo "fuzz target $target failed; crashing input:"
        ls -1 "$keep"/* 2>/dev/null || echo "(none written; see the log above)"
        echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target <input>"
        exit 1
    fi
    grep -E "^(Done|stat::number_of_executed_units)" "$log" | head -n 1 || true
done
echo "==> fuzzing found no crash"
