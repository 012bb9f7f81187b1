"""The canonical workloads in JAX (CPU, the whole step under ``jax.jit``), as JSON lines.

Run with an interpreter that has jax (never a dependency of zoo):

    /work/peers-venv/bin/python benchmarks/peer_jax.py [WORKLOAD...] [--seconds 2]

Threads as XLA comes; ``compare_peers.py`` also runs it with ``XLA_FLAGS`` asking for one.
Parameters are plain pytrees (no Flax): weights ``(in, out)``, LeCun-normal initialisation.
"""

from __future__ import annotations

import argparse

import _workloads
import jax
import jax.numpy as jnp
from jax import lax

KEY = jax.random.PRNGKey(0)


def linear(key, fan_in: int, fan_out: int) -> dict:
    return {"w": jax.random.normal(key, (fan_in, fan_out)) / fan_in ** 0.5,
            "b": jnp.zeros(fan_out)}


def stack(key, sizes) -> list:
    keys = jax.random.split(key, len(sizes) - 1)
    return [linear(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def run_stack(layers, x, last=None):
    for i, layer in enumerate(layers):
        x = x @ layer["w"] + layer["b"]
        x = jax.nn.relu(x) if i < len(layers) - 1 else x
    return x if last is None else last(x)


def maxpool2(x):  # NCHW
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def lenet(params, x):
    x = lax.conv_general_dilated(x, params["k1"], (1, 1), ((2, 2), (2, 2)))
    x = maxpool2(jax.nn.relu(x + params["b1"][:, None, None]))
    x = lax.conv_general_dilated(x, params["k2"], (1, 1), "VALID")
    x = maxpool2(jax.nn.relu(x + params["b2"][:, None, None]))
    return run_stack(params["fc"], x.reshape(x.shape[0], -1))


def lenet_params(key) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {"k1": jax.random.normal(k1, (6, 1, 5, 5)) / 5.0, "b1": jnp.zeros(6),
            "k2": jax.random.normal(k2, (16, 6, 5, 5)) / 150 ** 0.5, "b2": jnp.zeros(16),
            "fc": stack(k3, [400, 120, 84, 10])}


def recurrent_params(key, gates: int, hidden: int = 128) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w_in": jax.random.normal(k1, (1, gates * hidden)),
            "w_rec": jax.random.normal(k2, (hidden, gates * hidden)) / hidden ** 0.5,
            "b": jnp.zeros(gates * hidden), "out": stack(k3, [hidden, 10])}


def recurrent(params, x, lstm: bool):
    batch, hidden = x.shape[0], params["w_rec"].shape[0]

    def cell(state, x_t):
        h, c = state
        z = x_t @ params["w_in"] + h @ params["w_rec"] + params["b"]
        if lstm:
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None
        return (jnp.tanh(z), c), None

    zeros = jnp.zeros((batch, hidden))
    (h, _), _ = lax.scan(cell, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    return run_stack(params["out"], h)


def workload(name: str):
    """``(params, apply)`` for one workload."""
    if name == "mlp-small":
        return stack(KEY, [64, 64, 10]), run_stack
    if name == "mlp":
        return stack(KEY, [784, 256, 128, 10]), run_stack
    if name == "cnn":
        return lenet_params(KEY), lenet
    if name in ("rnn", "lstm"):
        lstm = name == "lstm"
        return recurrent_params(KEY, 4 if lstm else 1), lambda p, x: recurrent(p, x, lstm)
    return stack(KEY, [784, 256, 32, 256, 784]), lambda p, x: run_stack(p, x, jax.nn.sigmoid)


def steps_per_second(name: str, seconds: float) -> float:
    shape, batch, loss, _ = _workloads.WORKLOADS[name]
    params, apply = workload(name)
    kx, ky = jax.random.split(KEY)
    x = jax.random.uniform(kx, (batch, *shape))
    labels = jax.random.randint(ky, (batch,), 0, 10)

    def objective(p):
        out = apply(p, x)
        if loss == "mse":
            return jnp.mean((out - x) ** 2)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), labels[:, None], 1))

    @jax.jit
    def update(p, v):
        g = jax.grad(objective)(p)
        v = jax.tree_util.tree_map(lambda v_, g_: 0.9 * v_ + g_, v, g)
        return jax.tree_util.tree_map(lambda p_, v_: p_ - 0.01 * v_, p, v), v

    state = [params, jax.tree_util.tree_map(jnp.zeros_like, params)]

    def step():
        state[:] = update(*state)

    return _workloads.time_steps(step, seconds, lambda: jax.block_until_ready(state))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    for name in _workloads.names(args.workloads):
        _workloads.report(name, "jax", steps_per_second(name, args.seconds))


if __name__ == "__main__":
    main()
