"""Time one network's training step and inference in PyTorch or Keras, the way
`convnet bench --model NAME` times convnet's: random pictures of the model's input
size, 4 distinct batches held in memory, one pass over them to warm up, then whole
passes timed until at least --steps training steps ran; SGD (lr 0.01) on categorical
cross-entropy; inference at the training batch size, best of three passes.

    compare/.venv/bin/python compare/bench_models.py --framework pytorch --model alexnet \
        --batch-size 16 --steps 24 --threads 2 --out /tmp/alexnet_pytorch.json

Layouts (the same as convnet's `models::by_name`):
- lenet: Conv 6 5x5 relu, MaxPool 2, Conv 16 5x5 relu, MaxPool 2, Dense 120, 84, 10 (28x28x1)
- alexnet: Conv 96 11x11/4 relu, MaxPool 3/2, Conv 256 5x5 same, MaxPool 3/2, Conv 384,
  384, 256 3x3 same, MaxPool 3/2, Dense 4096, Dropout .5, Dense 4096, Dropout .5,
  Dense 1000 (227x227x3)
- cifar10-cnn: Conv 32 3x3 same, Conv 32 3x3, MaxPool 2, Conv 64 3x3 same, Conv 64 3x3,
  MaxPool 2, Dense 512, Dense 10, relu throughout (32x32x3)
- vgg-small: 2 blocks of 2x (Conv 3x3 same no bias, BatchNorm, relu) and MaxPool 2, with
  32 then 64 filters, global average pooling, Dense 10 (32x32x3)

PyTorch runs channels-last (torch.channels_last memory format, NHWC in memory like
convnet and Keras) unless --channels-first.
"""

import argparse
import json
import math
import os
import resource
import time

import numpy as np

DATA_BATCHES = 4
INPUTS = {"lenet": (28, 28, 1), "alexnet": (227, 227, 3), "cifar10-cnn": (32, 32, 3), "vgg-small": (32, 32, 3)}
CLASSES = {"lenet": 10, "alexnet": 1000, "cifar10-cnn": 10, "vgg-small": 10}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=["pytorch", "keras"], required=True)
    p.add_argument("--model", choices=sorted(INPUTS), required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--channels-first", action="store_true", help="PyTorch: keep NCHW memory")
    p.add_argument("--out", required=True)
    return p.parse_args()


def random_data(model, batch):
    rng = np.random.default_rng(7)
    h, w, c = INPUTS[model]
    n = batch * DATA_BATCHES
    x = rng.random((n, h, w, c), dtype=np.float32)
    y = rng.integers(0, CLASSES[model], n)
    return x, y


def best_of_three(run):
    run()  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# ---------------------------------------------------------------- PyTorch
def torch_model(name):
    import torch.nn as nn

    def conv(cin, cout, k, stride=1, same=False, bias=True):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if same else 0, bias=bias)

    if name == "lenet":
        layers = [conv(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), conv(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)]
    elif name == "alexnet":
        layers = [conv(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2),
                  conv(96, 256, 5, same=True), nn.ReLU(), nn.MaxPool2d(3, 2),
                  conv(256, 384, 3, same=True), nn.ReLU(), conv(384, 384, 3, same=True), nn.ReLU(),
                  conv(384, 256, 3, same=True), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
                  nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
                  nn.Dropout(0.5), nn.Linear(4096, 1000)]
    elif name == "cifar10-cnn":
        layers = [conv(3, 32, 3, same=True), nn.ReLU(), conv(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                  conv(32, 64, 3, same=True), nn.ReLU(), conv(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(64 * 6 * 6, 512), nn.ReLU(), nn.Linear(512, 10)]
    else:
        layers = []
        cin = 3
        for filters in (32, 64):
            for _ in range(2):
                layers += [conv(cin, filters, 3, same=True, bias=False), nn.BatchNorm2d(filters), nn.ReLU()]
                cin = filters
            layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def peak_rss_mb():
    """The most resident memory this process has held so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_pytorch(args, x, y):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    fmt = torch.contiguous_format if args.channels_first else torch.channels_last
    model = torch_model(args.model).to(memory_format=fmt)
    # NHWC data viewed as NCHW: channels-last memory without a copy.
    xs = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    ys = torch.from_numpy(y)
    b = args.batch_size
    batches = [(xs[i * b:(i + 1) * b], ys[i * b:(i + 1) * b]) for i in range(DATA_BATCHES)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_pass():
        model.train()
        for i in torch.randperm(DATA_BATCHES).tolist():
            xb, yb = batches[i]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()

    passes = math.ceil(args.steps / DATA_BATCHES)
    train_pass()  # warm-up
    start = time.perf_counter()
    for _ in range(passes):
        train_pass()
    train_rate = passes * len(x) / (time.perf_counter() - start)
    train_peak = peak_rss_mb()

    def predict():
        model.eval()
        with torch.inference_mode():
            for xb, _ in batches:
                model(xb)

    inference_rate = len(x) / best_of_three(predict)
    return torch.__version__, train_rate, inference_rate, passes * DATA_BATCHES, train_peak


# ---------------------------------------------------------------- Keras
def keras_model(name):
    import keras
    from keras import layers as L

    relu = "relu"
    if name == "lenet":
        body = [L.Conv2D(6, 5, activation=relu), L.MaxPooling2D(2), L.Conv2D(16, 5, activation=relu),
                L.MaxPooling2D(2), L.Flatten(), L.Dense(120, activation=relu), L.Dense(84, activation=relu),
                L.Dense(10, activation="softmax")]
    elif name == "alexnet":
        body = [L.Conv2D(96, 11, strides=4, activation=relu), L.MaxPooling2D(3, 2),
                L.Conv2D(256, 5, padding="same", activation=relu), L.MaxPooling2D(3, 2),
                L.Conv2D(384, 3, padding="same", activation=relu), L.Conv2D(384, 3, padding="same", activation=relu),
                L.Conv2D(256, 3, padding="same", activation=relu), L.MaxPooling2D(3, 2), L.Flatten(),
                L.Dense(4096, activation=relu), L.Dropout(0.5), L.Dense(4096, activation=relu), L.Dropout(0.5),
                L.Dense(1000, activation="softmax")]
    elif name == "cifar10-cnn":
        body = [L.Conv2D(32, 3, padding="same", activation=relu), L.Conv2D(32, 3, activation=relu),
                L.MaxPooling2D(2), L.Conv2D(64, 3, padding="same", activation=relu),
                L.Conv2D(64, 3, activation=relu), L.MaxPooling2D(2), L.Flatten(),
                L.Dense(512, activation=relu), L.Dense(10, activation="softmax")]
    else:
        body = []
        for filters in (32, 64):
            for _ in range(2):
                body += [L.Conv2D(filters, 3, padding="same", use_bias=False),
                         L.BatchNormalization(momentum=0.9), L.Activation(relu)]
            body.append(L.MaxPooling2D(2))
        body += [L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")]
    return keras.Sequential([keras.Input(INPUTS[name])] + body)


def run_keras(args, x, y):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    keras.utils.set_random_seed(1)
    model = keras_model(args.model)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    b = args.batch_size
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(b).repeat()
    passes = math.ceil(args.steps / DATA_BATCHES)
    steps = passes * DATA_BATCHES
    model.fit(data, steps_per_epoch=DATA_BATCHES, epochs=1, verbose=0, shuffle=False)  # warm-up
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    train_rate = steps * b / (time.perf_counter() - start)
    train_peak = peak_rss_mb()
    inference_rate = len(x) / best_of_three(lambda: model.predict(x, batch_size=b, verbose=0))
    return keras.__version__, train_rate, inference_rate, steps, train_peak


def main():
    args = parse_args()
    x, y = random_data(args.model, args.batch_size)
    run = run_pytorch if args.framework == "pytorch" else run_keras
    version, train_rate, inference_rate, steps, train_peak = run(args, x, y)
    result = {
        "framework": args.framework,
        "version": version,
        "model": args.model,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "steps": steps,
        "channels_last": args.framework == "keras" or not args.channels_first,
        "train_images_per_sec": train_rate,
        "inference_images_per_sec": inference_rate,
        "peak_train_rss_mb": train_peak,
        "peak_rss_mb": peak_rss_mb(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
