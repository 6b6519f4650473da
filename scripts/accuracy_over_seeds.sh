#!/usr/bin/env bash
# Trains the default recipe (`convnet train`: LeNet, 2 epochs, batch 128, Adam)
# with seeds 1 to 5 and prints each test accuracy, their mean and spread.
#   bash scripts/accuracy_over_seeds.sh [extra convnet train flags]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
out=$(mktemp -d)
for seed in 1 2 3 4 5; do
    target/release/convnet train --seed "$seed" --verbose 0 --metrics-out "$out/$seed.json" "$@" >/dev/null
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.load(open(f"{sys.argv[1]}/{seed}.json")) for seed in range(1, 6)]
acc = [100 * r["test_accuracy"] for r in runs]
for seed, (a, r) in enumerate(zip(acc, runs), start=1):
    seconds = ", ".join(f"{s:.2f}" for s in r["history"]["epoch_seconds"])
    print(f"seed {seed}: test accuracy {a:.2f}%  (epoch seconds: {seconds})")
print(f"mean {statistics.mean(acc):.2f}%, standard deviation {statistics.stdev(acc):.2f}, "
      f"min {min(acc):.2f}%, max {max(acc):.2f}%")
PY
rm -rf "$out"
