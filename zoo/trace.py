"""The seed note's worked example, replayed with zoo's real layers, loss and optimizer.

A 3-2-1 sigmoid network, x = (2, 3, -1), y = 1, loss C = (a - y)^2, learning rate 0.1 (the
figures are in docs/architecture.md, "The seed note's worked example"). ``worked_example()``
returns every intermediate figure; the CLI (``zoo trace``) prints them step by step, with the
places where the note's own figures differ.
"""

from __future__ import annotations

import numpy as np

X = np.array([[2.0, 3.0, -1.0]])
Y = np.array([[1.0]])
W1 = np.array([[0.2, -0.5, 0.1], [-0.3, 0.4, 0.2]])  # as the note writes it: (out, in)
B1 = np.array([0.3, -0.1])
W2 = np.array([[0.5, 0.2]])
B2 = np.array([0.1])
LR = 0.1

# The note's own figures where they differ from the exact ones, and why.
NOTE_SLIPS = {
    "dC_dW2": ((-0.0287, -0.0572),
               "the note's weight gradients are half the true ones: they belong to "
               "C = (a - y)^2 / 2, under which dC/db2 would be -0.0995, not the -0.199 it uses"),
    "W2_new": ((0.50287, 0.20572), "the note updated W2 with those halved gradients"),
    "C_new": (0.164025, "the note rounded the new output a2 to 0.595 before squaring"),
    "C": (0.168921, "the note rounded a2 to 0.589 before squaring"),
}


def build_network():
    """The note's network as a zoo model (float64), its loss and its optimizer."""
    from zoo.layers.activations import Sigmoid
    from zoo.layers.dense import Dense
    from zoo.losses import MSE
    from zoo.model import Sequential
    from zoo.optimizers import SGD

    model = Sequential([Dense(2), Sigmoid(), Dense(1), Sigmoid()])
    model.build((3,), np.random.default_rng(0), dtype=np.float64)
    dense1, dense2 = model.layers[0], model.layers[2]
    # zoo's Dense stores (in, out) so that forward is x @ W; the note writes W as (out, in).
    dense1.weight.value[...] = W1.T
    dense1.bias.value[...] = B1
    dense2.weight.value[...] = W2.T
    dense2.bias.value[...] = B2
    return model, MSE(), SGD(lr=LR)


def _forward(model, x):
    """Run layer by layer, keeping every intermediate (z1, a1, z2, a2)."""
    outs = []
    for layer in model.layers:
        x = layer.forward(x, training=True)
        outs.append(x.copy())
    return outs


def worked_example() -> dict:
    """Every figure of the worked example, computed by the real layers."""
    model, loss, optimizer = build_network()
    dense1, dense2 = model.layers[0], model.layers[2]
    z1, a1, z2, a2 = _forward(model, X)
    c = loss.forward(a2, Y)
    grad_a2 = loss.backward()
    grad_z2 = model.layers[3].backward(grad_a2)
    grad_a1 = dense2.backward(grad_z2)
    figures = {
        "z1": z1[0].tolist(), "a1": a1[0].tolist(), "z2": float(z2[0, 0]),
        "a2": float(a2[0, 0]), "C": float(c),
        "dC_da2": float(grad_a2[0, 0]), "da2_dz2": float(a2[0, 0] * (1 - a2[0, 0])),
        "dC_dW2": dense2.weight.grad[:, 0].tolist(), "dC_db2": float(dense2.bias.grad[0]),
    }
    # Full backprop to the first layer before anything is updated.
    dense1.backward(model.layers[1].backward(grad_a1))
    figures["dC_dW1"] = dense1.weight.grad.T.tolist()
    figures["dC_db1"] = dense1.bias.grad.tolist()
    # The note's step: update the output layer only, then forward again.
    optimizer.step([dense2.weight.value, dense2.bias.value], [dense2.weight.grad, dense2.bias.grad])
    figures["W2_new"] = dense2.weight.value[:, 0].tolist()
    figures["b2_new"] = float(dense2.bias.value[0])
    a2_new = _forward(model, X)[-1]
    figures["a2_new"] = float(a2_new[0, 0])
    figures["C_new"] = float(loss.forward(a2_new, Y))
    return figures


def train_until_stop(stops=("loss_below=0.001",), max_steps: int = 10_000, lr: float = LR,
                     host=None):
    """Keep training the whole network (all layers) until a stopping criterion fires.

    The note's flowchart: forward -> loss -> backward -> update -> check the stop rules.
    Returns ``(history, stop_reason)`` where history lists (step, loss).
    """
    from zoo.plugins import resolve_host
    from zoo.training.callbacks import Callback
    from zoo.training.loop import Trainer
    from zoo.training.stopping import StoppingEngine
    from zoo.training.stopspec import parse_stop

    host = resolve_host(host)
    model, loss, _ = build_network()
    optimizer = host.optimizers.get("sgd")(lr=lr)
    criteria = [parse_stop(spec, host.criteria) for spec in stops]
    criteria.append(host.criteria.get("max_steps")(max_steps))

    class Record(Callback):
        def __init__(self):
            self.losses = []

        def on_step_end(self, trainer):
            self.losses.append((trainer.step, float(trainer.last_loss)))

    record = Record()
    trainer = Trainer(model, loss, optimizer, StoppingEngine(criteria), task="regress",
                      batch_size=1, callbacks=[record])
    trainer.fit(X.copy(), Y.copy())
    return record.losses, trainer.stop_reason
