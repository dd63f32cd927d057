#!/usr/bin/env bash
# Prints the path of a libclang that RocksDB's bindgen (clang-sys) can load,
# or exits 1 when there is none. Used by scripts/setup.sh.
#
# clang-sys loads only files named `libclang.so`, `libclang-*.so`,
# `libclang.so.*` or `libclang-*.so.*` (`libclang.dylib` on macOS); never
# `libclang-cpp*`, the C++ API library that LLVM packages install on their
# own (Debian's libclang-cpp14 holds only `libclang-cpp.so.14`). It looks in
# $LIBCLANG_PATH, in `llvm-config --libdir`, and in the usual system
# directories; this script looks in the same places.
#
# Usage: scripts/find-libclang.sh [ROOT]
# ROOT (default /) is prepended to every system directory, so that a test can
# run the detection against a fake file system; with a ROOT other than /,
# LIBCLANG_PATH, llvm-config and ldconfig (which describe the real machine)
# are not consulted.
set -euo pipefail
shopt -s nullglob

root="${1:-/}"
root="${root%/}"

# True when NAME (a file name, no directory) is one clang-sys would load.
loadable() {
    case "$1" in
        libclang-cpp*) return 1 ;;
        libclang.so | libclang-*.so | libclang.so.* | libclang-*.so.* | libclang.dylib) return 0 ;;
        *) return 1 ;;
    esac
}

# Prints the first loadable libclang in the directories given, if any.
search() {
    local dir file
    for dir in "$@"; do
        [[ -d "$dir" ]] || continue
        for file in "$dir"/libclang*; do
            if loadable "$(basename "$file")" && [[ -e "$file" ]]; then
                printf '%s\n' "$file"
                return 0
            fi
        done
    done
    return 1
}

if [[ -z "$root" ]]; then
    if [[ -n "${LIBCLANG_PATH:-}" ]] && search "$LIBCLANG_PATH"; then
        exit 0
    fi
    if command -v llvm-config >/dev/null 2>&1; then
        libdir="$(llvm-config --libdir 2>/dev/null || true)"
        if [[ -n "$libdir" ]] && search "$libdir"; then
            exit 0
        fi
    fi
    if command -v ldconfig >/dev/null 2>&1; then
        # Lines look like: "	libclang-14.so.1 (libc6,x86-64) => /usr/lib/.../libclang-14.so.1".
        while read -r name _ _ _ path; do
            if loadable "$name" && [[ -e "$path" ]]; then
                printf '%s\n' "$path"
                exit 0
            fi
        done < <(ldconfig -p 2>/dev/null | tail -n +2)
    fi
fi

dirs=()
# Quoted here, expanded below under ROOT.
for pattern in \
    '/usr/local/llvm*/lib*' '/usr/local/lib*/*' '/usr/local/lib*' \
    '/usr/lib/llvm-*/lib' '/usr/lib*/*' '/usr/lib*' '/lib*/*' '/lib*' \
    /usr/local/opt/llvm/lib /opt/homebrew/opt/llvm/lib \
    /Library/Developer/CommandLineTools/usr/lib \
    /Applications/Xcode.app/Contents/Developer/Toolchains/XcodeDefault.xctoolchain/usr/lib; do
    # shellcheck disable=SC2086 # the pattern is meant to glob
    for dir in "$root"$pattern; do
        dirs+=("$dir")
    done
done
search "${dirs[@]}"
