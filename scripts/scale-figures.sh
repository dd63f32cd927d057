#!/bin/bash
# Import, export and a full sync at 1M changes (issue 14 "memory and scale"),
# each under /usr/bin/time. Needs a release build
# (`cargo build --release --workspace --all-targets`); about 3 minutes and
# 2.5 GB under /tmp. Usage: scripts/scale-figures.sh
set -euo pipefail
TARGET=${CARGO_TARGET_DIR:-target}/release
P=$TARGET/peers
M=$TARGET/examples/merge_profile
T=(/usr/bin/time -f "%e s, peak RSS %M KiB")
step() { echo "== $*"; "${T[@]}" "$@"; }
rm -rf /tmp/s1m /tmp/s1m-sync /tmp/s1m-import /tmp/s1m.changes
KEEP=/tmp/s1m step "$M" 1000000 10
DB=$(cat /tmp/s1m/database)
step "$P" --db /tmp/s1m export /tmp/s1m.changes
ls -l /tmp/s1m.changes
"$P" --db /tmp/s1m-import join "$DB" > /dev/null
step "$P" --db /tmp/s1m-import import /tmp/s1m.changes
"${T[@]}" -o /tmp/s1m-serve.time "$P" --db /tmp/s1m --json serve --listen 127.0.0.1:47124 > /tmp/s1m-serve.log 2>&1 &
SERVE=$!
sleep 3
"$P" --db /tmp/s1m-sync join "$DB" > /dev/null
step "$P" --db /tmp/s1m-sync --json sync 127.0.0.1:47124
kill -INT $(pgrep -f "serve --listen 127.0.0.1:47124" | grep -v time | tail -1) || true
wait $SERVE || true
echo "== serving side (peers serve, the whole run):"; cat /tmp/s1m-serve.time
step "$P" --db /tmp/s1m-sync state-hash
step "$P" --db /tmp/s1m state-hash
