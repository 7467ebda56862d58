#!/usr/bin/env bash
# Supply chain (`make check`): cargo-deny's advisories, licences, banned crates
# and sources over the workspace (deny.toml). The advisory database is the
# dated RustSec snapshot in ../shared/data (this machine cannot clone it):
# unpacked once into cargo-deny's database folder and read offline. cargo-deny
# itself is built once into ~/.cache/truffles.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TRUFFLES_CACHE:-$HOME/.cache/truffles}"
VERSION=0.20.2
ROOT="$CACHE/cargo-deny-$VERSION"
DENY="$ROOT/bin/cargo-deny"
SNAPSHOT="${TRUFFLES_ADVISORY_DB:-$(pwd)/../shared/data/rustsec-advisory-db-2026-08-21.tar.gz}"
SNAPSHOT_DATE=2026-08-21

if [ ! -x "$DENY" ]; then
    echo "deny: building cargo-deny $VERSION into $ROOT (once)"
    cargo install --locked --quiet cargo-deny --version "$VERSION" --root "$ROOT"
fi
if [ ! -f "$SNAPSHOT" ]; then
    echo "deny: the advisory snapshot $SNAPSHOT is missing (see ../shared/data/README.md)" >&2
    exit 1
fi

# cargo-deny opens the default database as a git repository named after a
# hash of its URL; the snapshot becomes that repository, one commit dated as
# the snapshot.
DB_PATH="$CACHE/advisory-dbs"
DB="$DB_PATH/advisory-db-3157b0e258782691"
STAMP="$(sha256sum "$SNAPSHOT" | cut -c1-16)"
if [ "$(cat "$DB/.truffles-snapshot" 2>/dev/null)" != "$STAMP" ]; then
    rm -rf "$DB"
    mkdir -p "$DB_PATH"
    tmp="$(mktemp -d)"
    tar -xzf "$SNAPSHOT" -C "$tmp"
    mv "$tmp/advisory-db" "$DB"
    rmdir "$tmp"
    (
        cd "$DB"
        git init -q
        git add -A
        GIT_AUTHOR_DATE="${SNAPSHOT_DATE}T00:00:00Z" GIT_COMMITTER_DATE="${SNAPSHOT_DATE}T00:00:00Z" \
            git -c user.name=truffles -c user.email=ci@truffles.invalid commit -qm "RustSec advisory-db snapshot $SNAPSHOT_DATE"
    )
    echo "$STAMP" > "$DB/.truffles-snapshot"
fi

# The crate graph comes from cargo (which may fetch crates' manifests);
# cargo-deny itself runs offline.
metadata="$(mktemp)"
trap 'rm -f "$metadata"' EXIT
cargo metadata --format-version 1 --locked > "$metadata"
config="$(mktemp)"
trap 'rm -f "$metadata" "$config"' EXIT
sed "s|^\[advisories\]|[advisories]\ndb-path = \"$DB_PATH\"|" deny.toml > "$config"
echo "deny: advisories as of the RustSec snapshot of $SNAPSHOT_DATE (newer ones are not seen)"
"$DENY" --offline --metadata-path "$metadata" --config "$config" check --show-stats
