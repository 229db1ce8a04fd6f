#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on Debian 12 (run as root).
# Idempotent: when every package is already installed, apt is not touched at all.
set -euo pipefail

PACKAGES=(
  # runtime stack the integration tests and the demo start for real
  containerd runc docker-registry fuse3 stargz-snapshotter busybox-static
  # tools used by scripts and tests
  jq curl ca-certificates time util-linux
  # building Rust crates with C parts (protoc comes from the protoc-bin-vendored crate)
  build-essential pkg-config
  # containerd's snapshotter conformance suite (tests/conformance), built in GOPATH mode
  golang-go golang-github-containerd-containerd-dev
)

missing_packages() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
      echo "$pkg"
    fi
  done
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present, skipping apt"
else
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing ${missing[*]} and not root; run as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Package scripts must not start services here: tests start their own instances.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if ((created_policy)); then rm -f "$policy"; fi
fi

# The Rust toolchain comes with the machine (rustup); fmt and clippy must be there too.
for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool not found on PATH" >&2; exit 1; }
done

# Facts the tests rely on, checked once here so a broken machine fails early and clearly.
if [[ ! -e /dev/fuse ]]; then
  echo "install-deps: warning: /dev/fuse is missing; FUSE tests will fail" >&2
fi
if readelf -l /bin/busybox 2>/dev/null | grep -q 'program interpreter'; then
  echo "install-deps: /bin/busybox is dynamically linked; busybox-static is needed" >&2
  exit 1
fi
echo "install-deps: ok"
