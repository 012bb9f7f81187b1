"""zoo against PyTorch and JAX on issue 16's two workloads: a transformer and a ResNet step.

The workloads are ``transformer`` and ``resnet`` of ``benchmarks/steps.py`` (read their
docstrings there); this file holds the same two models in PyTorch (eager) and JAX (the whole
step under ``jax.jit``), with the same batch, float32, SGD(lr=0.01, momentum=0.9), inputs
uniform in [0, 1) and labels in [0, 10), 5 warm-up steps then ``--seconds`` of steps. It is
both the peer script (run by an interpreter that has torch and jax, never dependencies of zoo)
and the driver, run by zoo's interpreter:

    python benchmarks/peers_transformer_resnet.py --rounds 5 --peer-python PEER_PYTHON
    PEER_PYTHON benchmarks/peers_transformer_resnet.py --peer torch transformer

Each round runs, one after the other, zoo, then each peer as it comes and with one-thread
flags (on a busy 2-core machine either can be faster; the best peer is the best of the four);
rounds are interleaved so that a change of machine load hits everyone. It prints the median
steps/s of each and the ratio of zoo to the best peer, and rewrites the ``transformer_resnet``
section of docs/benchmarks.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = {"transformer": ((32, 16), 64), "resnet": ((1, 28, 28), 64)}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


# -- PyTorch ----------------------------------------------------------------------------------
def torch_model(name):
    import torch
    from torch import nn

    if name == "transformer":
        class Transformer(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Linear(16, 64)
                self.pos = nn.Parameter(torch.randn(32, 64) * 0.02)
                self.blocks = nn.ModuleList([
                    nn.TransformerEncoderLayer(64, 4, 128, 0.1, activation="gelu",
                                               batch_first=True, norm_first=True)
                    for _ in range(2)])
                self.norm = nn.LayerNorm(64)
                self.head = nn.Linear(64, 10)

            def forward(self, x):
                h = self.embed(x) + self.pos
                for block in self.blocks:
                    h = block(h)
                return self.head(self.norm(h).mean(1))

        return Transformer()

    class Basic(nn.Module):  # torchvision's BasicBlock
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.down is None else self.down(x)))

    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(), Basic(16, 16, 1), Basic(16, 32, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def torch_bench(name, seconds):
    import torch
    from torch import nn

    torch.manual_seed(0)
    shape, batch = WORKLOADS[name]
    model = torch_model(name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
    loss = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()

    return _timed(step, seconds, batch, name, "torch")


# -- JAX --------------------------------------------------------------------------------------
def jax_model(name):
    """``(params, state, apply(params, state, x, key) -> (logits, state))``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    keys = iter(jax.random.split(jax.random.PRNGKey(0), 64))

    def dense(i, o):
        bound = 1 / i ** 0.5
        return {"w": jax.random.uniform(next(keys), (i, o), minval=-bound, maxval=bound),
                "b": jnp.zeros(o)}

    def layer_norm(p, x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * p["g"] + p["b"]

    def dropout(key, x, rate=0.1):
        keep = jax.random.bernoulli(key, 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), 0)

    if name == "transformer":
        e, heads, hidden = 64, 4, 128
        d = e // heads

        def norm():
            return {"g": jnp.ones(e), "b": jnp.zeros(e)}

        def block():
            return {"n1": norm(), "n2": norm(), "qkv": dense(e, 3 * e), "out": dense(e, e),
                    "l1": dense(e, hidden), "l2": dense(hidden, e)}

        params = {"embed": dense(16, e), "pos": jax.random.normal(next(keys), (32, e)) * 0.02,
                  "blocks": [block(), block()], "norm": norm(), "head": dense(e, 10)}

        def attention(p, x, key):
            b, t, _ = x.shape
            qkv = (x @ p["qkv"]["w"] + p["qkv"]["b"]).reshape(b, t, 3, heads, d)
            q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
            w = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / d ** 0.5, axis=-1)
            o = (dropout(key, w) @ v).transpose(0, 2, 1, 3).reshape(b, t, e)
            return o @ p["out"]["w"] + p["out"]["b"]

        def apply(params, state, x, key):
            h = x @ params["embed"]["w"] + params["embed"]["b"] + params["pos"]
            for p, k in zip(params["blocks"], jax.random.split(key, 2)):
                k1, k2, k3, k4 = jax.random.split(k, 4)
                h = h + dropout(k2, attention(p, layer_norm(p["n1"], h), k1))
                f = jax.nn.gelu(layer_norm(p["n2"], h) @ p["l1"]["w"] + p["l1"]["b"],
                                approximate=False)
                h = h + dropout(k4, dropout(k3, f) @ p["l2"]["w"] + p["l2"]["b"])
            pooled = layer_norm(params["norm"], h).mean(1)
            return pooled @ params["head"]["w"] + params["head"]["b"], state

        return params, {}, apply

    def conv(cin, cout, k):
        bound = 1 / (cin * k * k) ** 0.5
        return jax.random.uniform(next(keys), (cout, cin, k, k), minval=-bound, maxval=bound)

    def bn(c):
        return {"g": jnp.ones(c), "b": jnp.zeros(c)}

    def bn_state(c):
        return {"mean": jnp.zeros(c), "var": jnp.ones(c)}

    def batch_norm(p, s, x):
        mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        m = x.size // x.shape[1]
        s = {"mean": 0.9 * s["mean"] + 0.1 * mu, "var": 0.9 * s["var"] + 0.1 * var * m / (m - 1)}
        y = (x - mu[:, None, None]) / jnp.sqrt(var[:, None, None] + 1e-5)
        return y * p["g"][:, None, None] + p["b"][:, None, None], s

    def conv2d(w, x, stride, pad):
        return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)))

    def basic(cin, cout, stride):
        p = {"c1": conv(cin, cout, 3), "bn1": bn(cout), "c2": conv(cout, cout, 3),
             "bn2": bn(cout)}
        s = {"bn1": bn_state(cout), "bn2": bn_state(cout)}
        if stride != 1 or cin != cout:
            p.update(down=conv(cin, cout, 1), bnd=bn(cout))
            s["bnd"] = bn_state(cout)
        return p, s

    (p1, s1), (p2, s2) = basic(16, 16, 1), basic(16, 32, 2)
    params = {"stem": conv(1, 16, 3), "bn": bn(16), "b1": p1, "b2": p2, "head": dense(32, 10)}
    state = {"bn": bn_state(16), "b1": s1, "b2": s2}

    def run_basic(p, s, x, stride):
        out, n1 = batch_norm(p["bn1"], s["bn1"], conv2d(p["c1"], x, stride, 1))
        out, n2 = batch_norm(p["bn2"], s["bn2"], conv2d(p["c2"], jax.nn.relu(out), 1, 1))
        new = {"bn1": n1, "bn2": n2}
        if "down" in p:
            x, new["bnd"] = batch_norm(p["bnd"], s["bnd"], conv2d(p["down"], x, stride, 0))
        return jax.nn.relu(out + x), new

    def apply(params, state, x, key):
        h, s0 = batch_norm(params["bn"], state["bn"], conv2d(params["stem"], x, 1, 1))
        h, s1 = run_basic(params["b1"], state["b1"], jax.nn.relu(h), 1)
        h, s2 = run_basic(params["b2"], state["b2"], h, 2)
        logits = h.mean((2, 3)) @ params["head"]["w"] + params["head"]["b"]
        return logits, {"bn": s0, "b1": s1, "b2": s2}

    return params, state, apply


def jax_bench(name, seconds):
    import jax
    import jax.numpy as jnp

    shape, batch = WORKLOADS[name]
    params, state, apply = jax_model(name)
    key = jax.random.PRNGKey(1)
    x = jax.random.uniform(key, (batch, *shape))
    y = jax.random.randint(key, (batch,), 0, 10)

    def loss(p, s, k):
        logits, s = apply(p, s, x, k)
        nll = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
        return nll, s

    @jax.jit
    def step(p, v, s, k):
        k, sub = jax.random.split(k)
        g, s = jax.grad(loss, has_aux=True)(p, s, sub)
        v = jax.tree_util.tree_map(lambda v, g: 0.9 * v + g, v, g)
        p = jax.tree_util.tree_map(lambda p, v: p - 0.01 * v, p, v)
        return p, v, s, k

    carry = [params, jax.tree_util.tree_map(jnp.zeros_like, params), state, key]

    def one():
        carry[:] = step(*carry)

    result = _timed(one, seconds, batch, name, "jax", sync=lambda: jax.block_until_ready(carry))
    return result


def _timed(step, seconds, batch, name, framework, sync=lambda: None):
    for _ in range(5):
        step()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    sync()
    dt = time.perf_counter() - t0
    return {"workload": name, "framework": framework, "steps_per_s": n / dt,
            "samples_per_s": n * batch / dt}


# -- the driver -------------------------------------------------------------------------------
def run_one(argv, env_changes) -> float | None:
    env = dict(os.environ, **env_changes)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    for line in done.stdout.splitlines():
        try:
            return float(json.loads(line)["steps_per_s"])
        except (ValueError, KeyError, TypeError):
            continue
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"{' '.join(argv[1:])}: exit {done.returncode}: {tail}", file=sys.stderr)
    return None


def drive(args) -> int:
    import _docs

    me = os.path.abspath(__file__)
    seconds = str(args.seconds)
    contenders = [("zoo", lambda w: [sys.executable, os.path.join(HERE, "steps.py"), w,
                                     "--seconds", seconds], {})]
    for peer in ("torch", "jax"):
        def argv(w, peer=peer):
            return [args.peer_python, me, "--peer", peer, w, "--seconds", seconds]
        contenders += [(peer, argv, {}), (f"{peer}, 1-thread flags", argv, ONE_THREAD)]
    load_before = _docs.load()
    results = {w: {name: [] for name, _, _ in contenders} for w in args.workloads}
    for r in range(args.rounds):
        for w in args.workloads:
            for name, argv, env in contenders:
                value = run_one(argv(w), env)
                if value is not None:
                    results[w][name].append(value)
        print(f"round {r + 1}/{args.rounds} done (load {_docs.load()})", file=sys.stderr)
    load_after = _docs.load()
    rows = ["| workload | zoo (steps/s) | best peer | best peer (steps/s) | zoo / best peer |"
            " all medians (steps/s) |", "|---|---|---|---|---|---|"]
    for w in args.workloads:
        med = {name: statistics.median(v) for name, v in results[w].items() if v}
        peers = {n: v for n, v in med.items() if n != "zoo"}
        best = max(peers, key=peers.get) if peers else None
        zoo = med.get("zoo")
        ratio = f"{zoo / peers[best]:.2f}" if zoo and best else "-"
        every = ", ".join(f"{n} {v:.1f}" for n, v in med.items())
        rows.append(f"| {w} | {zoo or 0:.1f} | {best or '-'} | {peers.get(best, 0):.1f} | "
                    f"{ratio} | {every} |")
    print("\n".join(rows))
    if not args.no_write:
        versions = _docs.versions(args.peer_python, ("torch", "jax", "numpy"))
        body = "\n".join([
            "## Transformer and ResNet steps: zoo against PyTorch and JAX",
            "",
            f"`python benchmarks/peers_transformer_resnet.py --rounds {args.rounds}`: one "
            f"training step (forward, loss, backward, SGD with momentum) of the `transformer` "
            f"and `resnet` workloads of `benchmarks/steps.py`, float32, batch 64, "
            f"{args.seconds:g} s of steps after 5 warm-up steps, medians of {args.rounds} "
            f"interleaved rounds. zoo runs as `zoo train` does; each peer as it comes and "
            f"with one-thread flags; the best peer is the fastest of those four medians. "
            f"Peers: torch {versions.get('torch')}, jax {versions.get('jax')} (eager PyTorch; "
            f"JAX with the whole step under `jax.jit`).",
            "",
            *_docs.machine_lines(load_before, load_after),
            "",
            *rows])
        _docs.write_section("transformer_resnet", body)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=list(WORKLOADS),
                        help=f"some of {', '.join(WORKLOADS)}")
    parser.add_argument("--peer", choices=("torch", "jax"),
                        help="run as the peer script: one JSON line per workload")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="an interpreter with torch and jax, for the peers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]}; choose from {', '.join(WORKLOADS)}")
    if args.peer:
        bench = torch_bench if args.peer == "torch" else jax_bench
        for w in args.workloads:
            print(json.dumps(bench(w, args.seconds)), flush=True)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
