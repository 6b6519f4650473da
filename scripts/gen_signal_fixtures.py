#!/usr/bin/env python3
"""Writes the golden fixtures of tests/signal_golden.rs from scipy.

Run by hand (not in CI) with numpy and scipy installed:

    python3 scripts/gen_signal_fixtures.py

Writes tests/fixtures/signal/{direct,fft}.json. Each case holds the inputs, the
call (function, dtype, mode, boundary, fill value) and either scipy's result or
scipy's error message. Cases cover every mode, boundary and dtype, odd and even
kernels, kernels larger than the image, non-square and 1xN shapes, the
'valid'-mode error, and integer overflow.
"""
import json
import pathlib

import numpy as np
import scipy
from scipy import signal

OUT_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "signal"
DTYPES = ["i32", "i64", "f32", "f64"]
NUMPY_DTYPE = {"i32": np.int32, "i64": np.int64, "f32": np.float32, "f64": np.float64}
MODES = ["full", "same", "valid"]
BOUNDARIES = ["fill", "wrap", "symm"]

# (image shape, kernel shape): odd and even kernels, non-square, 1xN and Nx1,
# kernels larger than the image, and shapes where neither input contains the
# other (an error in 'valid' mode).
SHAPES = [
    ((5, 5), (3, 3)),
    ((6, 7), (2, 4)),
    ((4, 9), (3, 2)),
    ((1, 8), (1, 3)),
    ((7, 1), (4, 1)),
    ((3, 3), (5, 5)),
    ((2, 3), (4, 6)),
    ((3, 5), (5, 3)),
    ((1, 1), (1, 1)),
    ((9, 6), (6, 6)),
]


def random_array(rng, shape, dtype):
    if dtype.startswith("i"):
        return rng.integers(-20, 21, size=shape).astype(NUMPY_DTYPE[dtype])
    # Three decimals keep the JSON short; the values are exact in the dtype.
    return np.round(rng.uniform(-10, 10, size=shape), 3).astype(NUMPY_DTYPE[dtype])


def random_fill(rng, dtype):
    if dtype.startswith("i"):
        return int(rng.integers(-5, 6))
    return float(NUMPY_DTYPE[dtype](np.round(rng.uniform(-5, 5), 2)))


def to_json(array):
    return array.tolist()


def call(case, function):
    """Runs function on the case and stores its result or its error."""
    try:
        result = function()
    except ValueError as error:
        case["error"] = str(error)
    else:
        assert result.dtype == NUMPY_DTYPE[case["dtype"]], (case, result.dtype)
        case["expected"] = to_json(result)
    return case


def direct_cases(rng):
    cases = []
    counter = 0
    for function in ["convolve2d", "correlate2d"]:
        for mode in MODES:
            for boundary in BOUNDARIES:
                for image_shape, kernel_shape in SHAPES:
                    dtype = DTYPES[counter % len(DTYPES)]
                    counter += 1
                    in1 = random_array(rng, image_shape, dtype)
                    in2 = random_array(rng, kernel_shape, dtype)
                    fill = random_fill(rng, dtype) if boundary == "fill" else 0
                    case = dict(function=function, dtype=dtype, mode=mode,
                                boundary=boundary, fill=fill,
                                in1=to_json(in1), in2=to_json(in2))
                    f = getattr(signal, function)
                    cases.append(call(case, lambda: f(in1, in2, mode=mode, boundary=boundary,
                                                      fillvalue=fill)))
    cases.extend(dtype_sweep(rng))
    cases.extend(overflow_cases())
    return cases


def dtype_sweep(rng):
    """Every dtype with every mode and boundary on one mid-sized case each."""
    cases = []
    for dtype in DTYPES:
        for function in ["convolve2d", "correlate2d"]:
            for mode in MODES:
                for boundary in BOUNDARIES:
                    in1 = random_array(rng, (6, 7), dtype)
                    in2 = random_array(rng, (4, 3), dtype)
                    fill = random_fill(rng, dtype) if boundary == "fill" else 0
                    case = dict(function=function, dtype=dtype, mode=mode,
                                boundary=boundary, fill=fill,
                                in1=to_json(in1), in2=to_json(in2))
                    f = getattr(signal, function)
                    cases.append(call(case, lambda: f(in1, in2, mode=mode, boundary=boundary,
                                                      fillvalue=fill)))
    return cases


def overflow_cases():
    """Products and sums beyond the integer range wrap around."""
    cases = []
    for dtype, big in [("i32", 2**30 + 12345), ("i64", 2**62 + 12345)]:
        in1 = np.full((3, 3), big, dtype=NUMPY_DTYPE[dtype])
        in2 = np.array([[3, -5], [7, 2]], dtype=NUMPY_DTYPE[dtype])
        case = dict(function="convolve2d", dtype=dtype, mode="full", boundary="fill",
                    fill=0, in1=to_json(in1), in2=to_json(in2))
        cases.append(call(case, lambda: signal.convolve2d(in1, in2, mode="full")))
    return cases


FFT_SHAPES = SHAPES + [((12, 14), (7, 5)), ((4, 20), (3, 8))]


def fft_cases(rng):
    cases = []
    for dtype in ["f32", "f64"]:
        for mode in MODES:
            for image_shape, kernel_shape in FFT_SHAPES:
                in1 = random_array(rng, image_shape, dtype)
                in2 = random_array(rng, kernel_shape, dtype)
                case = dict(function="fftconvolve", dtype=dtype, mode=mode,
                            in1=to_json(in1), in2=to_json(in2))
                cases.append(call(case, lambda: signal.fftconvolve(in1, in2, mode=mode)))
    return cases


def write(name, cases):
    document = {
        "generator": "scripts/gen_signal_fixtures.py",
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "cases": cases,
    }
    path = OUT_DIR / name
    path.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    print(f"{path}: {len(cases)} cases, {path.stat().st_size} bytes")


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240603)
    write("direct.json", direct_cases(rng))
    write("fft.json", fft_cases(rng))


if __name__ == "__main__":
    main()
