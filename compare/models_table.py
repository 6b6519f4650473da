"""Tables of compare/run_models.sh: images/s of each model in each framework, convnet's
ratio to PyTorch, and (with --rounds) the ratios of every round against the targets of
issue 13.

    python compare/models_table.py compare/results/models/round_1
    python compare/models_table.py --rounds compare/results/models/round_*
"""

import glob
import json
import os
import sys

MODELS = ["alexnet", "cifar10-cnn", "vgg-small", "lenet"]
FRAMEWORKS = ["convnet", "pytorch", "keras"]
# Issue 13's targets: convnet's speed over PyTorch's (training, inference).
TARGETS = {"alexnet": (1.25, 1.25), "cifar10-cnn": (3.0, 3.0)}


def load(folder):
    results = {}
    for path in glob.glob(os.path.join(folder, "*.json")):
        with open(path) as f:
            r = json.load(f)
        results[(r["model"], r["framework"])] = r
    return results


def cell(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(results, model, key):
    ours, peer = results.get((model, "convnet")), results.get((model, "pytorch"))
    if not ours or not peer or key not in ours or key not in peer:
        return None
    return ours[key] / peer[key]


def training_peak(result):
    """Peak resident MB once training ends (results of older runs: at the end)."""
    return result.get("peak_train_rss_mb", result.get("peak_rss_mb"))


def table(folder):
    results = load(folder)
    models = [m for m in MODELS if any((m, f) in results for f in FRAMEWORKS)]
    head = "| network (batch) | " + " | ".join(
        f"{f} train | {f} infer" for f in FRAMEWORKS) + " | train / PyTorch | infer / PyTorch | peak MB training (convnet / PyTorch) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in models:
        row = []
        batch = next(r["batch_size"] for (mm, _), r in results.items() if mm == m)
        for f in FRAMEWORKS:
            r = results.get((m, f), {})
            digits = 1 if m == "alexnet" else 0
            row += [cell(r.get("train_images_per_sec"), digits), cell(r.get("inference_images_per_sec"), digits)]
        mem = [training_peak(results.get((m, f), {})) for f in ("convnet", "pytorch")]
        tr, inf = ratio(results, m, "train_images_per_sec"), ratio(results, m, "inference_images_per_sec")
        row += [cell(tr, 2), cell(inf, 2), " / ".join(cell(v) for v in mem)]
        lines.append(f"| {m} ({batch}) | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\nimages/s; ratios are convnet over PyTorch in the same round.\n"


def rounds(folders):
    lines = ["| round | " + " | ".join(f"{m} train | {m} infer" for m in MODELS) + " |",
             "|" + "---|" * (1 + 2 * len(MODELS))]
    met = {m: [0, 0] for m in MODELS}
    # Rounds with a ratio, per model and figure: a model left out of the
    # campaign gets no line, not "0 of 5".
    timed = {m: [0, 0] for m in MODELS}
    for i, folder in enumerate(folders, 1):
        results = load(folder)
        row = []
        for m in MODELS:
            for j, key in enumerate(["train_images_per_sec", "inference_images_per_sec"]):
                r = ratio(results, m, key)
                row.append(cell(r, 2))
                if r is not None:
                    timed[m][j] += 1
                if r is not None and m in TARGETS and r >= TARGETS[m][j]:
                    met[m][j] += 1
        lines.append(f"| {i} | " + " | ".join(row) + " |")
    lines.append("")
    for m, (train, infer) in TARGETS.items():
        if timed[m] == [0, 0]:
            continue
        lines.append(f"- {m}: training reached {train}x PyTorch in {met[m][0]} of {timed[m][0]} rounds, "
                     f"inference {infer}x in {met[m][1]} of {timed[m][1]}")
    return "\n".join(lines) + "\n"


def main():
    args = sys.argv[1:]
    if args and args[0] == "--rounds":
        print(rounds(args[1:]))
    elif len(args) == 1:
        print(table(args[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
