#!/usr/bin/env python3
"""Compare two convnet binaries on a noisy machine, by alternating them.

    python3 scripts/ab.py OLD NEW [--rounds 8] [--threads 2] [--layers]

Copy the binaries first (e.g. `cp target/release/convnet /tmp/convnet-old`), build the change,
then compare. Each round runs both, in alternating order, back to back, so that both see the
same moment of the machine:

- default: `convnet bench --no-scaling --images 30000`; prints each binary's seconds per epoch
  (median, fastest) and the median of the per-round ratios NEW/OLD (below 1: NEW is faster);
  the same for inference images/s (above 1: NEW is faster).
- `--layers`: `convnet bench --layers-only --layer-runs 10 --fastest`; prints each layer's fastest
  forward and backward step over all rounds, and the ratio of their sums.

Single runs mean little on a shared VM whose speed drifts by 1.5x within minutes: trust a ratio
only when it holds over several rounds (and, for layers, at 1 and at 2 threads).
"""

import argparse
import re
import statistics
import subprocess


def bench(binary, args):
    command = [binary, "bench", "--threads", str(args.threads)]
    if args.layers:
        command += ["--layers-only", "--layer-runs", "10", "--fastest"]
    else:
        command += ["--no-scaling", "--images", "30000"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def epoch_seconds(output):
    return float(re.search(r"training: \d+ images/s, ([\d.]+) s per", output).group(1))


def inference_rate(output):
    return float(re.search(r"inference: (\d+) images/s", output).group(1))


def layer_times(output):
    times = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and re.fullmatch(r"[\d.]+", parts[1]) and re.fullmatch(r"[\d.]+", parts[2]):
            times[parts[0]] = (float(parts[1]), float(parts[2]))
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", action="store_true")
    args = p.parse_args()

    binaries = [args.old, args.new]
    results = [[], []]
    for r in range(args.rounds):
        for which in ([0, 1] if r % 2 == 0 else [1, 0]):
            results[which].append(bench(binaries[which], args))

    if args.layers:
        best = []
        for outputs in results:
            merged = {}
            for times in map(layer_times, outputs):
                for layer, (f, b) in times.items():
                    old = merged.get(layer, (float("inf"), float("inf")))
                    merged[layer] = (min(old[0], f), min(old[1], b))
            best.append(merged)
        print(f"{'layer':<16} {'old fwd':>8} {'old bwd':>8} {'new fwd':>8} {'new bwd':>8}")
        for layer in best[0]:
            (of, ob), (nf, nb) = best[0][layer], best[1].get(layer, (0, 0))
            print(f"{layer:<16} {of:8.3f} {ob:8.3f} {nf:8.3f} {nb:8.3f}")
        totals = [sum(f + b for f, b in times.values()) for times in best]
        print(f"sum of fastest steps: old {totals[0]:.3f} ms, new {totals[1]:.3f} ms, "
              f"new/old {totals[1] / totals[0]:.3f}")
        return

    old, new = (list(map(epoch_seconds, outputs)) for outputs in results)
    for name, values in (("old", old), ("new", new)):
        print(f"{name}: median {statistics.median(values):.3f} s/epoch, fastest {min(values):.3f}  "
              + " ".join(f"{v:.2f}" for v in values))
    ratios = [n / o for o, n in zip(old, new)]
    print(f"new/old per round: median {statistics.median(ratios):.3f}  "
          + " ".join(f"{r:.2f}" for r in ratios))
    old, new = (list(map(inference_rate, outputs)) for outputs in results)
    for name, values in (("old", old), ("new", new)):
        print(f"{name} inference: median {statistics.median(values):.0f} images/s, best {max(values):.0f}")
    ratios = [n / o for o, n in zip(old, new)]
    print(f"inference new/old per round (above 1: NEW is faster): median {statistics.median(ratios):.3f}  "
          + " ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
