#!/usr/bin/env bash
# Builds Kordon and runs it on its embedded defaults (or: scripts/run.sh --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_debs $KORDON_DEB_PACKAGES
ensure_rust
cargo build --release --bin kordon
exec target/release/kordon run "$@"
