#!/usr/bin/env bash
# Checks (and where it can, installs) what building Peers needs:
#   - cargo (the Rust toolchain, see rust-version in Cargo.toml);
#   - libclang, which RocksDB's bindgen loads at build time.
# Idempotent: on a machine that has both it only checks and prints "ok".
# It exports nothing; set CARGO_TARGET_DIR yourself to reuse a warm target dir.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# 1. cargo
if ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found. Install Rust from https://rustup.rs (then open a new shell), and run this again."
fi
say "cargo: $(cargo --version)"

# 2. libclang (RocksDB's bindgen)
have_libclang() {
    if [[ -n "${LIBCLANG_PATH:-}" ]] && compgen -G "${LIBCLANG_PATH}/libclang*.so*" >/dev/null; then
        return 0
    fi
    # grep without -q: an early exit would SIGPIPE ldconfig and fail the pipe.
    if command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep libclang >/dev/null; then
        return 0
    fi
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null \
        || compgen -G '/usr/lib*/libclang*.so*' >/dev/null \
        || compgen -G '/usr/lib/*-linux-gnu/libclang*.so*' >/dev/null \
        || compgen -G '/usr/local/opt/llvm/lib/libclang*.dylib' >/dev/null \
        || compgen -G '/opt/homebrew/opt/llvm/lib/libclang*.dylib' >/dev/null \
        || compgen -G '/Library/Developer/CommandLineTools/usr/lib/libclang*.dylib' >/dev/null
}

if have_libclang; then
    say "libclang: found"
else
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "libclang: missing; installing libclang-dev with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y libclang-dev
        have_libclang || die "installed libclang-dev but still cannot find libclang; set LIBCLANG_PATH to the directory holding libclang.so"
        say "libclang: installed"
    else
        die "libclang not found: RocksDB's bindgen needs it. Install the package libclang-dev (Debian/Ubuntu: sudo apt-get install libclang-dev; Fedora: clang-devel; macOS: xcode-select --install), or set LIBCLANG_PATH, then run this again."
    fi
fi

say "ok"
