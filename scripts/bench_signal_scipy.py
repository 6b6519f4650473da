#!/usr/bin/env python3
"""Times scipy.signal.convolve2d and scipy.signal.fftconvolve on the sizes of
`convnet bench-convolve` (a square image, square kernels, mode 'same',
boundary 'fill'), reporting the median of several calls in milliseconds.

    python3 scripts/bench_signal_scipy.py [--size 512] [--kernels 3,5,15] [--json]
"""
import argparse
import json
import time

import numpy as np
import scipy
from scipy import signal


def median_ms(repeats, call):
    call()  # warm-up, as on the Rust side
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--kernels", default="3,5,15")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", choices=["f32", "f64"], default="f64")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    dtype = {"f32": np.float32, "f64": np.float64}[args.dtype]
    rng = np.random.default_rng(1)
    image = rng.random((args.size, args.size)).astype(dtype)
    results = []
    for k in [int(k) for k in args.kernels.split(",")]:
        kernel = rng.random((k, k)).astype(dtype)
        direct = median_ms(args.repeats, lambda: signal.convolve2d(image, kernel, mode="same"))
        fft = median_ms(args.repeats, lambda: signal.fftconvolve(image, kernel, mode="same"))
        results.append({"kernel": k, "convolve2d_ms": direct, "fftconvolve_ms": fft})

    if args.json:
        print(json.dumps({"size": args.size, "dtype": args.dtype, "scipy": scipy.__version__,
                          "numpy": np.__version__, "repeats": args.repeats,
                          "results": results}))
        return
    print(f"scipy {scipy.__version__}, image {args.size}x{args.size} {args.dtype}, "
          f"mode same, boundary fill, median of {args.repeats} calls")
    print(f"{'kernel':>8} {'convolve2d ms':>16} {'fftconvolve ms':>16}")
    for r in results:
        print(f"{r['kernel']:>6}x{r['kernel']} {r['convolve2d_ms']:>16.3f} {r['fftconvolve_ms']:>16.3f}")


if __name__ == "__main__":
    main()
