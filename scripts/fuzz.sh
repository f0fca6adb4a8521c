#!/usr/bin/env bash
# Fuzz one PSP parser or verifier with cargo-fuzz (libFuzzer), seeded from the shared fixtures and the simulator's
# reports: scripts/fuzz.sh TARGET SECONDS. Targets: stripe_report adyen_report stripe_webhook adyen_webhook.
# Needs the nightly toolchain (rustup) and cargo-fuzz (`cargo install cargo-fuzz`); prints the run's CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS}
seconds=${2:-1800}
fixtures=${TALLY_FIXTURES_DIR:-$(cd .. && pwd)/shared/fixtures}
corpus=fuzz/corpus/$target
mkdir -p "$corpus"
case $target in
  stripe_report|adyen_report)
    if [ ! -d .tally/fuzz-sim/reports ]; then
      ~/.cache/tally/target/release/tally sim generate --seed 3 --events 300 --out .tally/fuzz-sim > /dev/null 2>&1 \
        || cargo run -q --release --bin tally -- sim generate --seed 3 --events 300 --out .tally/fuzz-sim > /dev/null
    fi
    psp=${target%_report}
    for f in .tally/fuzz-sim/reports/"$psp"/*.csv; do head -c 4096 "$f" > "$corpus/sim-$(basename "$f")"; done
    if [ "$psp" = adyen ]; then
      { cut -d, -f1-30 "$fixtures/reports/adyen_settlement_details_header_2026.csv"; grep -v '^#' "$fixtures/reports/adyen_settlement_details_docs_sample.txt"; } > "$corpus/docs-sample.csv"
    fi ;;
  stripe_webhook) for f in "$fixtures"/stripe/webhook-events/*.json; do { echo 't=1780000000,v1=00'; cat "$f"; } > "$corpus/$(basename "$f")"; done ;;
  adyen_webhook) cp "$fixtures"/adyen/notifications/*.json "$corpus/" ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally/fuzz-target}
cd fuzz
/usr/bin/time -f "$target: %e s wall, %U s user + %S s system CPU" \
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1
