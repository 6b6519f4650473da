#!/usr/bin/env bash
# Times convnet's convolve2d/fftconvolve against scipy's on the same machine
# and prints a Markdown table with the ratios.
#
#   scripts/bench_signal.sh [PYTHON]
#
# PYTHON is an interpreter with numpy and scipy (default: python3). Extra
# settings through the environment: SIZE (512), KERNELS (3,5,15), REPEATS (15),
# DTYPE (f64 or f32).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
size=${SIZE:-512}
kernels=${KERNELS:-3,5,15}
repeats=${REPEATS:-15}
dtype=${DTYPE:-f64}

cargo build --release --quiet
ours=$(target/release/convnet bench-convolve --size "$size" --kernels "$kernels" --repeats "$repeats" --dtype "$dtype" --json)
theirs=$("$python" scripts/bench_signal_scipy.py --size "$size" --kernels "$kernels" --repeats "$repeats" --dtype "$dtype" --json)

"$python" - "$ours" "$theirs" <<'PY'
import json
import sys

ours, theirs = (json.loads(a) for a in sys.argv[1:3])
print(f"Image {ours['size']}x{ours['size']} {ours['dtype']}, mode 'same', boundary 'fill', "
      f"median of {ours['repeats']} calls; convnet on {ours['threads']} threads, "
      f"scipy {theirs['scipy']} (numpy {theirs['numpy']}).")
print()
print("| kernel | convnet convolve2d (ms) | scipy convolve2d (ms) | speed-up "
      "| convnet fftconvolve (ms) | scipy fftconvolve (ms) | speed-up |")
print("|---|---:|---:|---:|---:|---:|---:|")
for a, b in zip(ours["results"], theirs["results"]):
    assert a["kernel"] == b["kernel"]
    k = a["kernel"]
    print(f"| {k}x{k} | {a['convolve2d_ms']:.3f} | {b['convolve2d_ms']:.3f} "
          f"| {b['convolve2d_ms'] / a['convolve2d_ms']:.1f}x "
          f"| {a['fftconvolve_ms']:.3f} | {b['fftconvolve_ms']:.3f} "
          f"| {b['fftconvolve_ms'] / a['fftconvolve_ms']:.1f}x |")
PY
