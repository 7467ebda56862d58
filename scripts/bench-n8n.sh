#!/usr/bin/env bash
# Truffles against n8n on this machine (tests/benches/versus_n8n.rs): installs
# what the comparison needs outside the repository, then runs the bench inside
# the test environment (PostgreSQL, Redis).
#
#   scripts/bench-n8n.sh        (what `make bench-n8n` runs)
#
# - wrk, the one load generator, from Debian's packages;
# - n8n $N8N_VERSION from the npm registry into ${TRUFFLES_CACHE:-~/.cache/truffles}/n8n-<version>
#   (never committed). n8n 1.x asks for xlsx from cdn.sheetjs.com, which is not
#   the npm registry: overridden with the registry's last xlsx (0.18.5); its
#   isolated-vm 6 does not build on Node.js 20: overridden with 5.0.4;
# - the release build of truffles-bot (the binary the bench starts).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRUFFLES_CACHE:-$HOME/.cache/truffles}"
# The last n8n 1.x line that runs on Node.js 20 (n8n 2 needs Node.js 24).
N8N_VERSION="1.123.81"

log() { printf '[bench-n8n] %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian)"
    sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

N8N_DIR="$CACHE/n8n-$N8N_VERSION"
if [[ ! -x $N8N_DIR/node_modules/.bin/n8n ]]; then
    log "installing n8n $N8N_VERSION (npm) into $N8N_DIR (first run only, a few minutes)"
    mkdir -p "$N8N_DIR"
    cat >"$N8N_DIR/package.json" <<JSON
{
  "name": "truffles-bench-n8n",
  "private": true,
  "dependencies": {"n8n": "$N8N_VERSION"},
  "overrides": {"xlsx": "npm:xlsx@0.18.5", "isolated-vm": "5.0.4"}
}
JSON
    (cd "$N8N_DIR" && npm install --no-audit --no-fund --loglevel=error >&2)
fi

cd "$ROOT"
cargo build --release --locked -p truffles-bot --bin truffles-bot
export TRUFFLES_N8N_BIN="$N8N_DIR/node_modules/.bin/n8n"
export TRUFFLES_BOT_BIN="$ROOT/target/release/truffles-bot"
exec scripts/testenv.sh run -- cargo bench --locked -p truffles-tests --bench versus_n8n
