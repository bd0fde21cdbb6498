#!/usr/bin/env bash
# Installs what building nodewall needs on Debian bookworm: the C libraries it links, LLVM for
# bpf-linker, the pinned Rust toolchains and bpf-linker. Used by the Dockerfile's build stage, and
# meant to be the install step of CI too, so that the image is built exactly as CI builds.
#
#   bash deploy/build-deps.sh          install what is missing (idempotent; needs root and rustup)
#   bash deploy/build-deps.sh --check  install nothing, exit 1 naming anything missing
set -euo pipefail

APT_PACKAGES=(llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev libnftnl-dev libmnl-dev pkg-config)
STABLE=1.95.0
NIGHTLY=nightly-2026-05-20 # the eBPF program's toolchain (needs rust-src for build-std)
BPF_LINKER=0.13.0

check_only=false
[[ ${1:-} == --check ]] && check_only=true

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("apt:$pkg")
done
for tc in "$STABLE" "$NIGHTLY"; do
  rustup toolchain list 2>/dev/null | grep -q "^$tc-" || missing+=("rustup:$tc")
done
rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src' || missing+=("rustup:$NIGHTLY/rust-src")
bpf-linker --version 2>/dev/null | grep -q " $BPF_LINKER\$" || missing+=("cargo:bpf-linker@$BPF_LINKER")

if $check_only; then
  if ((${#missing[@]})); then
    echo "build-deps: missing: ${missing[*]}" >&2
    exit 1
  fi
  echo "build-deps: all present (${#APT_PACKAGES[@]} apt packages, rust $STABLE + $NIGHTLY, bpf-linker $BPF_LINKER)"
  exit 0
fi

((${#missing[@]})) || { echo "build-deps: nothing to install"; exit 0; }
if printf '%s\n' "${missing[@]}" | grep -q '^apt:'; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"
fi
rustup toolchain install "$STABLE" --profile minimal
rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
if ! bpf-linker --version 2>/dev/null | grep -q " $BPF_LINKER\$"; then
  cargo +"$STABLE" install bpf-linker --version "=$BPF_LINKER" --locked --no-default-features --features llvm-22
fi
