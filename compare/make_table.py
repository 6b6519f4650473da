"""Turn the JSON files run.sh leaves in compare/results/ into a Markdown table.

Files read (any may be missing; its cells then read "n/a"):
  convnet_train.json  from `convnet train --metrics-out`
  convnet_bench.json  from `convnet bench --json`
  pytorch.json, keras.json  from the peer scripts
  <framework>.maxrss_kb  max RSS of the whole training process, from `/usr/bin/time -f %M`
  <framework>.loadavg    1-minute load average just before that framework ran

With --rounds DIR..., one row per round (a results folder each, as `run.sh --repeat R`
keeps them): mean seconds per epoch of each framework and the faster peer's over convnet's,
inference images/s of convnet and of the best peer and their ratio.
"""

import argparse
import datetime
import json
import os
import platform
import tomllib

NA = "n/a"


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def read_number(path):
    try:
        with open(path) as f:
            return float(f.read().split()[-1])  # last line: time(1) may print a notice before it
    except (OSError, ValueError, IndexError):
        return None


def convnet_version(repo):
    try:
        with open(os.path.join(repo, "Cargo.toml"), "rb") as f:
            return tomllib.load(f)["package"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return NA


def framework_data(framework, results):
    """A framework's JSON; convnet's inference figure comes from its bench file."""
    if framework != "convnet":
        return read_json(os.path.join(results, f"{framework}.json"))
    data = read_json(os.path.join(results, "convnet_train.json"))
    bench = read_json(os.path.join(results, "convnet_bench.json"))
    data.setdefault("inference_images_per_sec", bench.get("inference_images_per_sec"))
    return data


def row(framework, results, repo, threads):
    data = framework_data(framework, results)
    if framework == "convnet":
        data.setdefault("version", convnet_version(repo))
    kb = read_number(os.path.join(results, f"{framework}.maxrss_kb"))

    epochs = (data.get("history") or {}).get("epoch_seconds")
    accuracy = data.get("test_accuracy")
    images = data.get("inference_images_per_sec")
    return [
        framework,
        str(data.get("version") or NA),
        str(data.get("threads", threads)),
        ", ".join(f"{s:.2f}" for s in epochs) if epochs else NA,
        f"{100 * accuracy:.2f}%" if accuracy is not None else NA,
        f"{images:,.0f}" if images is not None else NA,
        f"{kb / 1024:.0f}" if kb is not None else NA,
    ]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or NA


def round_figures(results):
    """(convnet, pytorch, keras) mean epoch seconds and inference images/s of one round."""
    figures = {}
    for framework in ["convnet", "pytorch", "keras"]:
        data = framework_data(framework, results)
        epochs = (data.get("history") or {}).get("epoch_seconds")
        figures[framework] = (
            sum(epochs) / len(epochs) if epochs else None,
            data.get("inference_images_per_sec"),
        )
    return figures


def rounds_table(folders):
    header = ["round", "convnet s/epoch", "PyTorch s/epoch", "Keras s/epoch", "ratio",
              "convnet inference", "best peer", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    epoch_ratios, inference_ratios = [], []
    for number, folder in enumerate(folders, start=1):
        f = round_figures(folder)
        (c, ci), (p, pi), (k, ki) = f["convnet"], f["pytorch"], f["keras"]
        peers = [x for x in (p, k) if x is not None]
        peer_inference = [x for x in (pi, ki) if x is not None]
        ratio = min(peers) / c if c and peers else None
        inference = ci / max(peer_inference) if ci and peer_inference else None
        epoch_ratios += [ratio] if ratio else []
        inference_ratios += [inference] if inference else []
        cell = lambda x, fmt: NA if x is None else format(x, fmt)  # noqa: E731
        lines.append("| " + " | ".join([
            str(number), cell(c, ".2f"), cell(p, ".2f"), cell(k, ".2f"), cell(ratio, ".2f") + "x",
            cell(ci, ",.0f"), cell(max(peer_inference) if peer_inference else None, ",.0f"),
            cell(inference, ".1f") + "x"]) + " |")
    summary = []
    for name, ratios in [("epoch time", epoch_ratios), ("inference", inference_ratios)]:
        if ratios:
            met = sum(r >= 3 for r in ratios)
            summary.append(f"{name}: {min(ratios):.2f}x-{max(ratios):.2f}x, at least 3x in "
                           f"{met} of {len(ratios)} rounds")
    return "\n".join(lines + ["", "; ".join(summary) + "."]) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", nargs="+", help="results folders of several rounds: print their ratios")
    p.add_argument("--results", default="compare/results")
    p.add_argument("--repo", default=".")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--frameworks", nargs="+", default=["convnet", "pytorch", "keras"])
    args = p.parse_args()
    if args.rounds:
        print(rounds_table(args.rounds), end="")
        return

    header = ["framework", "version", "threads", "seconds per epoch", "test accuracy",
              "inference images/s", "peak memory (MB)"]
    rows = [row(f, args.results, args.repo, args.threads) for f in args.frameworks]
    lines = [
        f"LeNet on MNIST, batch 128, 2 epochs, Adam. {datetime.date.today()}, "
        f"{cpu_model()}, {os.cpu_count()} CPUs visible, {args.threads} threads.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ] + ["| " + " | ".join(r) + " |" for r in rows]
    loads = [(f, read_number(os.path.join(args.results, f"{f}.loadavg"))) for f in args.frameworks]
    lines += ["", "1-minute load average before each run (should be near 0): "
              + ", ".join(f"{f} {NA if x is None else x}" for f, x in loads) + "."]
    table = "\n".join(lines) + "\n"
    print(table, end="")
    with open(os.path.join(args.results, "table.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
