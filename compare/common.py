"""Shared bits of the PyTorch and Keras peers: command line, MNIST loading, JSON output."""

import argparse
import gzip
import json
import os
import resource
import time

import numpy as np


def parse_args(framework):
    p = argparse.ArgumentParser(description=f"LeNet on MNIST with {framework} (reference recipe)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", default="data/mnist")
    p.add_argument("--out", required=True, help="JSON file to write")
    return p.parse_args()


def _read_idx(path):
    """Read a gzipped IDX file (big-endian header: magic, then one u32 per dimension)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(data_dir):
    """Return (train_x, train_y, test_x, test_y): images float32 in [0, 1] shaped (N, 28, 28), labels int64."""

    def part(images, labels):
        x = _read_idx(os.path.join(data_dir, images)).astype(np.float32) / 255.0
        y = _read_idx(os.path.join(data_dir, labels)).astype(np.int64)
        return x, y

    train_x, train_y = part("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    test_x, test_y = part("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return train_x, train_y, test_x, test_y


def inference_images_per_sec(predict_all, n_images, runs=5):
    """Images per second of predict_all() (all test images, batch 1000): best of `runs` after a warm-up."""
    predict_all()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        predict_all()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def peak_rss_mb():
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(path, framework, version, threads, history, test_loss, test_accuracy, images_per_sec):
    """Write the JSON the Rust CLI writes, plus the peer-only keys."""
    result = {
        "framework": framework,
        "version": version,
        "threads": threads,
        "history": history,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "inference_images_per_sec": float(images_per_sec),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
