"""LeNet on MNIST with Keras (TensorFlow backend): the reference recipe convnet follows.

Batch 128, Adam() with Keras defaults (lr 1e-3, betas .9/.999, eps 1e-7), fit() shuffles
each epoch, categorical cross-entropy on one-hot labels, pixels / 255.
"""

import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D  # noqa: E402

from common import inference_images_per_sec, load_mnist, parse_args, write_result  # noqa: E402

args = parse_args("Keras")
# Thread pools must be sized before TensorFlow runs its first op.
tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(args.threads)
keras.utils.set_random_seed(args.seed)

train_x, train_y, test_x, test_y = load_mnist(args.data_dir)
train_x, test_x = train_x[..., None], test_x[..., None]  # NHWC: (N, 28, 28, 1)
train_y, test_y = keras.utils.to_categorical(train_y, 10), keras.utils.to_categorical(test_y, 10)

model = keras.Sequential([
    Input(shape=(28, 28, 1)),
    Conv2D(6, kernel_size=(5, 5), activation="relu"),
    MaxPooling2D(pool_size=(2, 2)),
    Conv2D(16, kernel_size=(5, 5), activation="relu"),
    MaxPooling2D(pool_size=(2, 2)),
    Flatten(),
    Dense(120, activation="relu"),
    Dense(84, activation="relu"),
    Dense(10, activation="softmax"),
])
model.compile(loss=keras.losses.categorical_crossentropy, optimizer=keras.optimizers.Adam(), metrics=["accuracy"])


class EpochTimer(keras.callbacks.Callback):
    """epoch_seconds = epoch start to the end of its last training batch, so the
    validation pass fit() runs at the end of each epoch is not included."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self.last_batch_end - self.start)
        print(f"epoch {epoch + 1}: training loop {self.seconds[-1]:.2f} s", flush=True)


timer = EpochTimer()
fit = model.fit(train_x, train_y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
                verbose=2, validation_data=(test_x, test_y), callbacks=[timer])
history = {k: [float(v) for v in fit.history[k]] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
history["epoch_seconds"] = timer.seconds

test_loss, test_accuracy = model.evaluate(test_x, test_y, verbose=0)
images_per_sec = inference_images_per_sec(lambda: model.predict(test_x, batch_size=1000, verbose=0), len(test_x))
version = f"{keras.__version__} (tensorflow {tf.__version__})"
write_result(args.out, "keras", version, args.threads, history, test_loss, test_accuracy, images_per_sec)
