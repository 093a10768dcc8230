#!/usr/bin/env bash
# Runs every test of the workspace: unit, property and end-to-end tests, the
# benches in test mode, and a short fuzz smoke pass over every parser.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_debs $KORDON_DEB_PACKAGES $KORDON_TEST_DEB_PACKAGES
stop_packaged_services
ensure_rust

echo "== cargo test (workspace, all targets)"
mkdir -p target
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee target/test-output.log
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.log | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' target/test-output.log | awk '{s += $1} END {print s + 0}')

echo "== fuzz smoke (${KORDON_FUZZ_SECONDS:-10}s per target)"
ensure_cargo_tool cargo-fuzz cargo-fuzz
for crate_dir in dataplane controlplane; do
    [ -d "$crate_dir/fuzz" ] || continue
    for target in $(cd "$crate_dir" && cargo fuzz list); do
        # New inputs go to a scratch corpus; the seeds in the repo stay as they are.
        mkdir -p "$crate_dir/fuzz/target/corpus-work/$target"
        (cd "$crate_dir" && cargo fuzz run -s none "$target" \
            "fuzz/target/corpus-work/$target" "fuzz/corpus/$target" -- \
            -max_total_time="${KORDON_FUZZ_SECONDS:-10}" -rss_limit_mb=2048 >/dev/null 2>"fuzz/$target.log") \
            || { echo "fuzz target $target failed:"; tail -40 "$crate_dir/fuzz/$target.log"; exit 1; }
        echo "fuzz $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second.*' "$crate_dir/fuzz/$target.log" | tail -1 || echo done)"
    done
done
echo "all tests and fuzz targets passed"
echo "tests: $passed passed, $failed failed"
