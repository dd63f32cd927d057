#!/bin/bash
# The figures of docs/FORMAT.md "Figures" for 1M changes over 10,000 rows:
# full history against a trimmed replica and one made from a snapshot file.
# Needs a release build (`cargo build --release --workspace --all-targets`);
# takes about 8 minutes and 2.5 GB under /tmp. Usage: scripts/trim-figures.sh
set -euo pipefail
TARGET=${CARGO_TARGET_DIR:-target}/release
P=$TARGET/peers
M=$TARGET/examples/merge_profile
T=(/usr/bin/time -f "%e s, peak RSS %M KiB")
step() { echo "== $*"; "${T[@]}" "$@"; }
rm -rf /tmp/f1m /tmp/f1m-new /tmp/f1m-sync /tmp/f1m.snap
ROWS=10000 KEEP=/tmp/f1m step "$M" 1000000 10
# The workload's owner (secret: u64 LE 1, u64 LE 0x9ee75eed, 16 zero bytes).
echo 0100000000000000ed5ee79e0000000000000000000000000000000000000000 > /tmp/f1m/identity.key
du -sb /tmp/f1m/log /tmp/f1m/view
step "$P" --db /tmp/f1m state-hash
step "$P" --db /tmp/f1m rebuild
step "$P" --db /tmp/f1m checkpoint
step "$P" --db /tmp/f1m snapshot write /tmp/f1m.snap
ls -l /tmp/f1m.snap
step "$P" --db /tmp/f1m trim
du -sb /tmp/f1m/*
step "$P" --db /tmp/f1m state-hash
step "$P" --db /tmp/f1m rebuild
step "$P" --db /tmp/f1m-new join "$(cat /tmp/f1m/database)" --snapshot /tmp/f1m.snap
step "$P" --db /tmp/f1m-new state-hash
du -sb /tmp/f1m-new/*
# Bootstrap over sync: a new replica syncs with the trimmed one, served on
# a local port: the first session brings the snapshot (installed at once),
# the second the changes above it. One JSON report per session.
"$P" --db /tmp/f1m --json serve --listen 127.0.0.1:47123 > /tmp/f1m-serve.log 2>&1 &
SERVE=$!
sleep 3
"$P" --db /tmp/f1m-sync join "$(cat /tmp/f1m/database)" > /dev/null
step "$P" --db /tmp/f1m-sync --json sync 127.0.0.1:47123
kill -INT $SERVE
wait $SERVE || true
step "$P" --db /tmp/f1m-sync state-hash
du -sb /tmp/f1m-sync/*
