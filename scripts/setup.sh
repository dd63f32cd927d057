#!/usr/bin/env bash
# Checks (and where it can, installs) what building Peers needs:
#   - cargo (the Rust toolchain, see rust-version in Cargo.toml);
#   - libclang, which RocksDB's bindgen loads at build time;
#   - a C and C++ compiler (RocksDB, jemalloc) and make (jemalloc's build);
#   - for the test across NATs (cli/tests/nat.rs), which only runs as root:
#     iproute2 (`ip netns`) and iptables. Installed as root when missing;
#     otherwise that one test skips and says why.
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

# 2. libclang (RocksDB's bindgen loads it at build time). scripts/find-libclang.sh
# looks where bindgen looks, for the file names bindgen loads (not libclang-cpp).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${PEERS_SETUP_ROOT:-/}"   # a fake root for the detection test
missing="libclang not found: RocksDB's bindgen needs libclang.so (libclang-cpp is not enough). Install the package libclang-dev (Debian/Ubuntu: sudo apt-get install libclang-dev; Fedora: sudo dnf install clang-devel; Arch: sudo pacman -S clang; macOS: xcode-select --install), or set LIBCLANG_PATH to the directory that holds libclang.so, then run this again."

if found="$("$here/find-libclang.sh" "$root")"; then
    say "libclang: $found"
elif [[ "$root" == / && "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "libclang: missing; installing libclang-dev with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libclang-dev >/dev/null
    found="$("$here/find-libclang.sh" "$root")" \
        || die "installed libclang-dev but still cannot find a loadable libclang; set LIBCLANG_PATH to the directory holding libclang.so"
    say "libclang: installed $found"
else
    die "$missing"
fi

# 3. The C and C++ compilers (RocksDB and jemalloc are C++ and C) and make
# (jemalloc, the `peers` program's allocator, builds with configure and make).
tools=()
command -v cc >/dev/null 2>&1 || tools+=(cc)
command -v c++ >/dev/null 2>&1 || tools+=(c++)
command -v make >/dev/null 2>&1 || tools+=(make)
if (( ${#tools[@]} )); then
    if [[ "$root" == / && "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "build tools: missing ${tools[*]}; installing build-essential with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq build-essential >/dev/null
        for tool in cc c++ make; do
            command -v "$tool" >/dev/null 2>&1 \
                || die "installed build-essential but $tool is still missing; install a C and C++ compiler and make, then run this again."
        done
    else
        die "missing ${tools[*]}: building RocksDB and jemalloc needs a C and C++ compiler and make. Install them (Debian/Ubuntu: sudo apt-get install build-essential; Fedora: sudo dnf install gcc gcc-c++ make; Arch: sudo pacman -S base-devel; macOS: xcode-select --install), then run this again."
    fi
fi
say "build tools: $(command -v cc) $(command -v c++) $(command -v make)"

# 4. iptables and ip, for the NAT test (optional: it skips without them).
if [[ "$root" == / && "$(id -u)" -eq 0 ]]; then
    need=()
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
    command -v iptables >/dev/null 2>&1 || need+=(iptables)
    if (( ${#need[@]} )) && command -v apt-get >/dev/null 2>&1; then
        say "NAT test: installing ${need[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }; } \
            || say "NAT test: could not install ${need[*]}; that test will skip"
    fi
    if command -v ip >/dev/null 2>&1 && command -v iptables >/dev/null 2>&1; then
        say "NAT test: ip and iptables present"
    fi
else
    say "NAT test: not root; cli/tests/nat.rs will skip (it needs network namespaces)"
fi
