#!/usr/bin/env bash
# rust-toolchain.toml pins Rust 1.95.0. On machines where that release is installed
# only as "stable", register it under its version so rustup does not try to
# download it (this workplace reaches package registries only).
set -euo pipefail
want=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
if rustup toolchain list | grep -q "^$want-"; then exit 0; fi
if rustc +stable --version 2>/dev/null | grep -q "^rustc $want "; then
    rustup toolchain link "$want" "$(rustc +stable --print sysroot)"
    echo "linked the installed stable toolchain as $want" >&2
else
    echo "Rust $want is required (rust-toolchain.toml); install it with: rustup toolchain install $want --component rustfmt clippy" >&2
    exit 1
fi
