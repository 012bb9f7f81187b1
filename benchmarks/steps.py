"""The six canonical workloads (``_workloads.py``): training steps per second with zoo, as JSON.

Each workload is built from zoo's public API: the layers (``Dense``, ``Conv2D``, ``MaxPool2D``,
``SimpleRNN``, ``LSTM``...), ``Sequential``, the loss, ``SGD(lr=0.01, momentum=0.9)`` and a
real ``zoo.training.loop.Trainer``, whose ``train_step(xb, tb)`` (forward -> loss -> backward ->
update on the one flat parameter buffer, exactly what ``zoo train`` runs per batch) is what is
timed. Like the peers (``peer_torch.py`` and ``peer_jax.py``): float32, fixed
batch, inputs uniform in [0, 1), integer labels in [0, 10), 5 warm-up steps, then ``--seconds``
(2 by default) of steps. One line per workload in the peers' format:

    {"workload": "mlp", "framework": "zoo", "steps_per_s": ..., "samples_per_s": ...}

    python benchmarks/steps.py                 # all (the six, transformer, resnet)
    python benchmarks/steps.py mlp-small cnn   # some of them
    python benchmarks/steps.py lstm --runs 3   # three lines

Threads as under the ``zoo`` command (``zoo.kernels.threads``): BLAS on one thread, and the
trainer's governor lets zoo's blocked products and recurrent loops use more threads when the
step times say it pays; ``ZOO_BLAS_THREADS=1`` (or ``2``) fixes their count.

LeNet-5's ``relu -> maxpool2`` runs as ``maxpool2 -> relu`` (the same function for a
non-decreasing activation, a quarter of the activation work), as the ``cnn`` plugin's
``preset=lenet5`` builds it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from zoo.kernels.threads import prepare_environment

prepare_environment()  # zoo's default, before numpy is imported

import numpy as np  # noqa: E402  (after prepare_environment, on purpose)

# name: (model factory, input shape without batch, batch, loss name)
WORKLOADS = {}


def _workload(name, shape, batch, loss):
    def register(factory):
        WORKLOADS[name] = (factory, shape, batch, loss)
        return factory

    return register


@_workload("mlp-small", (64,), 32, "softmax_cross_entropy")
def mlp_small():
    from zoo.layers.dense import Dense
    from zoo.model import Sequential

    return Sequential([Dense(64, activation="relu"), Dense(10)])


@_workload("mlp", (784,), 128, "softmax_cross_entropy")
def mlp():
    from zoo.layers.dense import Dense
    from zoo.model import Sequential

    return Sequential([Dense(256, activation="relu"), Dense(128, activation="relu"), Dense(10)])


@_workload("cnn", (1, 28, 28), 64, "softmax_cross_entropy")
def lenet5():
    from zoo.layers.activations import ReLU
    from zoo.layers.conv import Conv2D
    from zoo.layers.dense import Dense
    from zoo.layers.pool import MaxPool2D
    from zoo.layers.reshape import Flatten
    from zoo.model import Sequential

    return Sequential([Conv2D(6, 5, padding=2), MaxPool2D(2), ReLU(),
                       Conv2D(16, 5), MaxPool2D(2), ReLU(), Flatten(),
                       Dense(120, activation="relu"), Dense(84, activation="relu"), Dense(10)])


@_workload("rnn", (40, 1), 64, "softmax_cross_entropy")
def rnn():
    from zoo.layers.dense import Dense
    from zoo.layers.recurrent import SimpleRNN
    from zoo.model import Sequential

    return Sequential([SimpleRNN(128), Dense(10)])


@_workload("lstm", (40, 1), 64, "softmax_cross_entropy")
def lstm():
    from zoo.layers.dense import Dense
    from zoo.layers.recurrent import LSTM
    from zoo.model import Sequential

    return Sequential([LSTM(128), Dense(10)])


@_workload("autoencoder", (784,), 128, "mse")
def autoencoder():
    from zoo.layers.dense import Dense
    from zoo.model import Sequential

    return Sequential([Dense(256, activation="relu"), Dense(32, activation="relu"),
                       Dense(256, activation="relu"), Dense(784, activation="sigmoid")])


# The two workloads of issue 16 (beside the six above); their PyTorch and JAX versions are in
# benchmarks/peers_transformer_resnet.py, which also runs the comparison.
@_workload("transformer", (32, 16), 64, "softmax_cross_entropy")
def transformer():
    """32 steps of 16 features -> Dense(64) tokens + learned positions, 2 pre-norm encoder
    blocks (4 heads, MLP 128, GELU, dropout 0.1), LayerNorm, mean over steps, Dense(10)."""
    from zoo.layers.dense import Dense
    from zoo.layers.embedding import PositionalEmbedding
    from zoo.layers.layernorm import LayerNorm
    from zoo.layers.sequence import TimeMean
    from zoo.layers.transformer import TransformerEncoderBlock
    from zoo.model import Sequential

    return Sequential([Dense(64), PositionalEmbedding(),
                       TransformerEncoderBlock(4, 128, dropout=0.1),
                       TransformerEncoderBlock(4, 128, dropout=0.1),
                       LayerNorm(), TimeMean(), Dense(10)])


@_workload("resnet", (1, 28, 28), 64, "softmax_cross_entropy")
def resnet():
    """A small ResNet on 28x28 images: conv3x3(16)-BN-ReLU, BasicBlock(16),
    BasicBlock(32, stride 2), global average pooling, Dense(10)."""
    from zoo.layers.activations import ReLU
    from zoo.layers.conv import Conv2D
    from zoo.layers.dense import Dense
    from zoo.layers.norm import BatchNorm
    from zoo.layers.pool import GlobalAvgPool2D
    from zoo.layers.residual import ResidualBlock2D
    from zoo.model import Sequential

    return Sequential([Conv2D(16, 3, padding=1, use_bias=False), BatchNorm(), ReLU(),
                       ResidualBlock2D(16), ResidualBlock2D(32, stride=2), GlobalAvgPool2D(),
                       Dense(10)])


def make_trainer(name: str, seed: int = 0):
    """``(trainer, xb, tb)`` for workload ``name``: a built model, its data and targets."""
    from zoo.losses import MSE, SoftmaxCrossEntropy
    from zoo.optimizers import SGD
    from zoo.training.loop import Trainer
    from zoo.training.stopping import StoppingEngine

    factory, shape, batch, loss_name = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    model = factory()
    model.build(shape, rng)
    classify = loss_name == "softmax_cross_entropy"
    loss = SoftmaxCrossEntropy() if classify else MSE()
    trainer = Trainer(model, loss, SGD(lr=0.01, momentum=0.9), StoppingEngine(),
                      task="classify" if classify else "reconstruct", batch_size=batch, rng=rng)
    xb = rng.random((batch, *shape), dtype=np.float32)
    tb = rng.integers(0, 10, batch) if classify else xb
    return trainer, xb, tb


def bench(name: str, seconds: float = 2.0) -> dict:
    """Steps per second of ``Trainer.train_step`` on workload ``name``, peers' protocol."""
    trainer, xb, tb = make_trainer(name)
    step = trainer.train_step
    for _ in range(5):
        step(xb, tb)
    clock = time.perf_counter
    n, t0 = 0, clock()
    while clock() - t0 < seconds:
        step(xb, tb)
        n += 1
    dt = clock() - t0
    batch = WORKLOADS[name][2]
    return {"workload": name, "framework": "zoo", "steps_per_s": n / dt,
            "samples_per_s": n * batch / dt}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"some of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per workload")
    parser.add_argument("--runs", type=int, default=1, help="lines per workload (each a fresh "
                        "model, 5 warm-up steps and --seconds of steps)")
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; expected some of "
                     f"{', '.join(WORKLOADS)}")
    for name in args.workloads or WORKLOADS:
        for _ in range(args.runs):
            print(json.dumps(bench(name, args.seconds)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
