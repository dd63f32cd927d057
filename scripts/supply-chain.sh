#!/usr/bin/env bash
# Supply-chain checks over Cargo.lock: `cargo deny check` (advisories, licences,
# duplicate versions, sources; configuration in deny.toml) and `cargo audit`
# (RustSec advisories). Each runs only when installed, and says so when not:
#   cargo install --locked cargo-deny cargo-audit
# Both read RustSec's advisory database, a git repository on GitHub. Without
# network access to it, a copy fetched earlier is used (with a note saying its
# date); with no copy at all the advisory checks say they skipped, and the
# licence, duplicate-version and source checks still run (they need no
# network). Exits non-zero when a check that ran failed. Inclusion graphs are
# hidden to keep CI's log short: `cargo deny check bans` (without
# --hide-inclusion-graph) or `cargo tree -i CRATE` shows who pulls a crate in.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

install_hint="install: cargo install --locked cargo-deny cargo-audit"
db_url="https://github.com/RustSec/advisory-db"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
status=0

online=false
if timeout 30 git ls-remote --exit-code "$db_url" HEAD >/dev/null 2>&1; then
    online=true
fi

# A copy of the advisory database fetched earlier: cargo-deny's clone
# (advisory-dbs/advisory-db-<hash>) or cargo-audit's (advisory-db).
local_db() {
    local dir
    for dir in "$cargo_home"/advisory-dbs/advisory-db-* "$cargo_home"/advisory-db; do
        if [[ -d "$dir/.git" && "$(basename "$dir")" =~ ^advisory-db(-[0-9a-f]{16})?$ ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

describe_db() {
    echo "note: $db_url cannot be reached; using the copy fetched earlier in $1" \
        "(last commit $(git -C "$1" log -1 --format=%cs 2>/dev/null || echo '?'))"
}

if cargo deny --version >/dev/null 2>&1; then
    cargo deny --version
    if $online; then
        cargo deny --locked check --hide-inclusion-graph || status=1
    elif db=$(local_db) && [[ "$db" == */advisory-dbs/* ]]; then
        describe_db "$db"
        cargo deny --locked --offline check --hide-inclusion-graph || status=1
    else
        echo "skipped: cargo deny check advisories: $db_url cannot be reached and no copy was fetched earlier"
        cargo deny --locked --offline check --hide-inclusion-graph licenses bans sources || status=1
    fi
else
    echo "skipped: cargo-deny not installed ($install_hint)"
fi

if cargo audit --version >/dev/null 2>&1; then
    cargo audit --version
    if $online; then
        cargo audit || status=1
    elif db=$(local_db); then
        describe_db "$db"
        # The same repository whichever tool cloned it. An old copy is
        # reported (above), not refused.
        cargo audit --no-fetch --stale --db "$db" || status=1
    else
        echo "skipped: cargo audit: $db_url cannot be reached and no copy was fetched earlier"
    fi
else
    echo "skipped: cargo-audit not installed ($install_hint)"
fi

exit "$status"
