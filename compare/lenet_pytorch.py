"""LeNet on MNIST with PyTorch, same recipe as convnet and the Keras script.

Batch 128, Adam(lr 1e-3, betas .9/.999, eps 1e-7 as in Keras), a fresh shuffle each
epoch, cross-entropy, pixels / 255, Keras-style init (Glorot uniform weights, zero biases).
"""

import time

import torch
from torch import nn

from common import inference_images_per_sec, load_mnist, parse_args, write_result

args = parse_args("PyTorch")
# Thread pools must be sized before any parallel work happens.
torch.set_num_threads(args.threads)
torch.set_num_interop_threads(args.threads)
torch.manual_seed(args.seed)

train_x, train_y, test_x, test_y = (torch.from_numpy(a) for a in load_mnist(args.data_dir))
train_x, test_x = train_x.unsqueeze(1), test_x.unsqueeze(1)  # NCHW: (N, 1, 28, 28)

model = nn.Sequential(
    nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),  # 6 x 12 x 12
    nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 4 x 4
    nn.Flatten(),
    nn.Linear(16 * 4 * 4, 120), nn.ReLU(),
    nn.Linear(120, 84), nn.ReLU(),
    nn.Linear(84, 10),  # logits: CrossEntropyLoss applies the softmax
)
for m in model.modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(m.weight)  # = Keras glorot_uniform
        nn.init.zeros_(m.bias)

optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
loss_fn = nn.CrossEntropyLoss()  # mean over the batch, like Keras categorical_crossentropy
generator = torch.Generator().manual_seed(args.seed)


def evaluate(x, y, batch=1000):
    """Mean loss and accuracy over a whole set."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch])
            total_loss += loss_fn(logits, y[i : i + batch]).item() * len(logits)
            correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return total_loss / len(x), correct / len(x)


history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "epoch_seconds": []}
for epoch in range(args.epochs):
    # epoch_seconds times the training loop only; the validation pass below is not included.
    model.train()
    start = time.perf_counter()
    perm = torch.randperm(len(train_x), generator=generator)
    total_loss, correct = 0.0, 0
    for i in range(0, len(train_x), args.batch_size):
        idx = perm[i : i + args.batch_size]
        x, y = train_x[idx], train_y[idx]
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # Running means over the epoch, as Keras reports `loss` and `accuracy`.
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
    seconds = time.perf_counter() - start

    val_loss, val_accuracy = evaluate(test_x, test_y)
    history["loss"].append(total_loss / len(train_x))
    history["accuracy"].append(correct / len(train_x))
    history["val_loss"].append(val_loss)
    history["val_accuracy"].append(val_accuracy)
    history["epoch_seconds"].append(seconds)
    print(f"epoch {epoch + 1}/{args.epochs}: {seconds:.2f} s, loss {total_loss / len(train_x):.4f}, "
          f"accuracy {correct / len(train_x):.4f}, val_loss {val_loss:.4f}, val_accuracy {val_accuracy:.4f}",
          flush=True)

test_loss, test_accuracy = evaluate(test_x, test_y)


def predict_all():
    """Class probabilities for all test images, batch 1000 (what Keras predict() returns)."""
    with torch.inference_mode():
        return torch.cat([model(test_x[i : i + 1000]).softmax(1) for i in range(0, len(test_x), 1000)])


model.eval()
images_per_sec = inference_images_per_sec(predict_all, len(test_x))
write_result(args.out, "pytorch", torch.__version__, args.threads, history, test_loss, test_accuracy, images_per_sec)
