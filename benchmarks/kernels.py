"""Where the time of a training step goes: zoo's kernels against plain numpy, then per layer.

Part 1, kernels: each of zoo's kernels at the sizes the canonical workloads (``_workloads.py``)
call it with, warm (compiled and called once), against a plain numpy version of the same
operation; microseconds per call (median of repeats) and numpy / zoo.

Part 2, layers: for each workload, the forward and backward time of every layer, the loss and
the optimizer update inside a real ``Trainer`` (``benchmarks/steps.py``'s models), and their
sum against one whole ``train_step``.

    python benchmarks/kernels.py                  # both parts, every workload
    python benchmarks/kernels.py --part layers cnn

BLAS on one thread (``zoo.kernels.threads``; no trainer's governor runs here, so zoo's blocked
products and recurrent loops run on one thread too, or on ``--threads N``). The machine is
noisy: read the ratios and the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import time

from zoo.kernels.threads import prepare_environment

prepare_environment()

import numpy as np  # noqa: E402  (after prepare_environment, on purpose)
import steps  # noqa: E402

F32 = np.float32


def timeit(fn, repeat: int = 30, min_time: float = 2e-3) -> float:
    """Median microseconds per call of ``fn()``, each sample long enough to time."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / once))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples) * 1e6


def _cases(rng):
    """``(name, zoo_fn, numpy_fn)`` triples at the workloads' sizes."""
    from zoo import kernels

    def r(*shape):
        return rng.standard_normal(shape).astype(F32)

    cases = []
    # Dense: bias + activation in place, and its backward with the bias gradient.
    for rows, units, act in ((32, 64, "relu"), (128, 256, "relu"), (128, 784, "sigmoid")):
        y, b, g = r(rows, units), r(units), r(rows, units)
        dz, db = np.empty_like(y), np.empty(units, F32)
        cached = np.maximum(y, 0) if act == "relu" else 1 / (1 + np.exp(-y))

        def np_fwd(y=y, b=b, act=act):
            z = y + b
            return np.maximum(z, 0, out=z) if act == "relu" else 1 / (1 + np.exp(-z))

        def np_bwd(g=g, c=cached, act=act):
            d = g * (c > 0) if act == "relu" else g * c * (1 - c)
            return d, d.sum(0)

        cases.append((f"dense.bias_act {act} ({rows}, {units})",
                      lambda y=y, b=b, act=act: kernels.dense.bias_act(y.copy(), b, act,
                                                                        check=False),
                      np_fwd))
        cases.append((f"dense.act_backward {act} ({rows}, {units})",
                      lambda g=g, c=cached, dz=dz, db=db, act=act:
                      kernels.dense.act_backward(g, c, act, dz, db, check=False), np_bwd))
    # The GEMMs themselves (numpy's BLAS on both sides: for scale).
    for m, k, n in ((32, 64, 64), (128, 784, 256), (64, 150, 784)):
        a, w, out = r(m, k), r(k, n), np.empty((m, n), F32)
        cases.append((f"GEMM ({m}x{k}) @ ({k}x{n}), BLAS",
                      lambda a=a, w=w, out=out: np.dot(a, w, out=out), lambda a=a, w=w: a @ w))
    # zoo's own float32 product (what Gemm's blocks run) against numpy's BLAS: x @ w, the
    # weight gradient x.T @ dz, and the input gradient dz @ w.T (w's panels transposed).
    from zoo.kernels import sgemm

    x, w, dz = r(128, 784), r(784, 256), r(128, 256)
    for label, a, b in (("x @ w", x, w), ("x.T @ dz", x.T, dz), ("dz @ w.T", dz, w.T)):
        out = np.empty((a.shape[0], b.shape[1]), F32)
        cases.append((f"sgemm {label} ({a.shape[0]}x{a.shape[1]}) @ ({b.shape[0]}x{b.shape[1]})",
                      lambda a=a, b=b, out=out: sgemm.gemm(a, b, out),
                      lambda a=a, b=b: a @ b))
    # A Dense layer's uncut products (``blas.layer_gemms``: one sgemm call each, as the layer
    # and the fused step make them) against the one BLAS call they replaced: the mlp-small
    # workload's five and the autoencoder's 256 -> 32 layer's three.
    for rows, fan_in, units in ((32, 64, 64), (32, 64, 10), (128, 256, 32)):
        x, w, dz = r(rows, fan_in), r(fan_in, units), r(rows, units)
        for label, a, b in (("x @ w", x, w), ("x.T @ dz", x.T, dz), ("dz @ w.T", dz, w.T)):
            out = np.empty((a.shape[0], b.shape[1]), F32)
            cases.append((f"sgemm uncut {label} ({a.shape[0]}x{a.shape[1]}) @ "
                          f"({b.shape[0]}x{b.shape[1]})",
                          lambda a=a, b=b, out=out: sgemm.gemm_if_supported(a, b, out),
                          lambda a=a, b=b, out=out: np.dot(a, b, out=out)))
    # Losses.
    for rows in (32, 128):
        logits, labels = r(rows, 10), rng.integers(0, 10, rows)
        grad = np.empty_like(logits)

        def np_ce(z=logits, y=labels):
            s = z - z.max(1, keepdims=True)
            e = np.exp(s)
            p = e / e.sum(1, keepdims=True)
            loss = -np.mean(np.log(p[np.arange(len(y)), y]))
            p[np.arange(len(y)), y] -= 1
            return loss, p / len(y)

        cases.append((f"losses.softmax_cross_entropy ({rows}, 10)",
                      lambda z=logits, y=labels, g=grad:
                      kernels.losses.softmax_cross_entropy(z, y, g, check=False), np_ce))
    pred, target = r(128, 784), r(128, 784)
    grad = np.empty_like(pred)
    cases.append(("losses.mse (128, 784)",
                  lambda: kernels.losses.mse(pred, target, grad, check=False),
                  lambda: (np.mean((pred - target) ** 2), (pred - target) * (2 / pred.size))))
    # Optimizer: one step on the flat buffer of the mlp (235k) and autoencoder (420k) models.
    for size in (4810, 235146, 419344):
        p, g, v = r(size), r(size), np.zeros(size, F32)

        def np_sgd(p=p, g=g, v=v):
            v *= 0.9
            v += g
            p -= 0.01 * v

        cases.append((f"optim.sgd momentum ({size:,} values)",
                      lambda p=p, g=g, v=v: kernels.optim.sgd(p, g, v, lr=0.01, momentum=0.9,
                                                              check=False), np_sgd))
    # Pooling 2x2 on LeNet-5's first feature maps.
    x = r(64, 6, 28, 28)
    out, idx = kernels.pool.max_pool2d(x, (2, 2), (2, 2), (0, 0), (14, 14))
    gp = r(64, 6, 14, 14)
    dx = np.empty_like(x)

    def np_pool(x=x):
        return x.reshape(64, 6, 14, 2, 14, 2).max(axis=(3, 5))

    def np_pool_back(x=x, g=gp):
        w = x.reshape(64, 6, 14, 2, 14, 2)
        mask = w == w.max(axis=(3, 5), keepdims=True)
        return (mask * g[:, :, :, None, :, None]).reshape(x.shape)

    cases.append(("pool.max_pool2d 2x2 (64, 6, 28, 28)",
                  lambda: kernels.pool.max_pool2d(x, (2, 2), (2, 2), (0, 0), (14, 14), out, idx),
                  np_pool))
    cases.append(("pool.max_pool2d_backward (64, 6, 28, 28)",
                  lambda: kernels.pool.max_pool2d_backward(gp, idx, x.shape, dx), np_pool_back))
    # The same pools as MaxPool2D runs them: int8 argmax codes (both of LeNet-5's pools).
    for shape in ((64, 6, 28, 28), (64, 16, 10, 10)):
        xs = x if shape == x.shape else r(*shape)
        outs, codes = kernels.pool.max_pool2d_2x2(xs)
        gs, dxs = r(*outs.shape), np.empty_like(xs)
        n, c, h, w = shape

        def np_pool2(xs=xs, n=n, c=c, h=h, w=w):
            return xs.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

        def np_pool2_back(xs=xs, g=gs, n=n, c=c, h=h, w=w):
            win = xs.reshape(n, c, h // 2, 2, w // 2, 2)
            mask = win == win.max(axis=(3, 5), keepdims=True)
            return (mask * g[:, :, :, None, :, None]).reshape(xs.shape)

        cases.append((f"pool.max_pool2d_2x2 {shape}",
                      lambda xs=xs, o=outs, k=codes: kernels.pool.max_pool2d_2x2(xs, o, k),
                      np_pool2))
        cases.append((f"pool.max_pool2d_2x2_backward {shape}",
                      lambda g=gs, k=codes, s=shape, d=dxs:
                      kernels.pool.max_pool2d_2x2_backward(g, k, s, d), np_pool2_back))
    # LeNet-5's first convolution: the direct kernel against im2col + GEMM in numpy.
    xp, w, b = r(64, 1, 32, 32), r(6, 1, 5, 5), r(6)
    y = np.empty((64, 6, 28, 28), F32)
    g = r(64, 6, 28, 28)
    dw = np.empty_like(w)
    db = np.empty(6, F32)

    def np_conv(xp=xp, w=w, b=b):
        win = np.lib.stride_tricks.sliding_window_view(xp, (5, 5), axis=(2, 3))
        return np.einsum("nchwij,fcij->nfhw", win, w, optimize=True) + b[:, None, None]

    def np_conv_back(xp=xp, g=g):
        win = np.lib.stride_tricks.sliding_window_view(xp, (5, 5), axis=(2, 3))
        return np.einsum("nchwij,nfhw->fcij", win, g, optimize=True), g.sum((0, 2, 3))

    cases.append(("conv.conv2d_direct 5x5 (64, 1, 32, 32) -> 6",
                  lambda: kernels.conv.conv2d_direct(xp, w, b, (1, 1), (28, 28), y), np_conv))
    cases.append(("conv.conv2d_direct_backward, no input grad",
                  lambda: kernels.conv.conv2d_direct_backward(g, xp, w, (1, 1), dw, db,
                                                              input_grad=False),
                  np_conv_back))
    # One tanh-RNN sequence (40 steps, batch 64, hidden 128), forward.
    t_, n_, u_ = 40, 64, 128
    xs, w_in, w_rec, bias = r(t_, n_, 1), r(1, u_) * 0.1, r(u_, u_) * 0.08, r(u_)
    h, gates = np.zeros((t_ + 1, n_, u_), F32), np.empty((t_, n_, u_), F32)

    def np_rnn():
        hh = np.zeros((n_, u_), F32)
        for t in range(t_):
            hh = np.tanh(xs[t] @ w_in + hh @ w_rec + bias)
        return hh

    cases.append(("recurrent.rnn_forward (40 steps, 64 x 128)",
                  lambda: kernels.recurrent.rnn_forward(xs, w_in, w_rec, bias, h, gates, True),
                  np_rnn))
    # The lstm workload's step products (one row block of 32): forward h @ R, backward
    # dz @ R^T, against weights packed once (what the time loops run) and numpy's matmul.
    from zoo.kernels import packed

    for m, k, n in ((32, 128, 512), (32, 512, 128)):
        a_, b_, c_ = r(m, k), r(k, n), np.empty((m, n), F32)
        bp, work = packed.pack(b_), packed.scratch()
        cases.append((f"packed.gemm {m} x {k} x {n} (a recurrent step)",
                      lambda a_=a_, bp=bp, c_=c_, work=work: packed.gemm(a_, bp, c_, work),
                      lambda a_=a_, b_=b_, c_=c_: np.matmul(a_, b_, out=c_)))
    # One lstm sequence (40 steps, batch 64, hidden 128, one feature), forward and backward.
    lw_in, lw_rec, lbias = r(1, 4 * u_) * 0.1, r(u_, 4 * u_) * 0.08, r(4 * u_)
    lh, lc = np.zeros((t_ + 1, n_, u_), F32), np.zeros((t_ + 1, n_, u_), F32)
    ltc, lgates = np.empty((t_, n_, u_), F32), np.empty((t_, n_, 4 * u_), F32)
    ldz, ldh = np.empty((t_, n_, 4 * u_), F32), r(n_, u_) * 0.01
    ldw_in, ldw_rec, ldb = np.empty_like(lw_in), np.empty_like(lw_rec), np.empty_like(lbias)
    sig = lambda v: 0.5 + 0.5 * np.tanh(0.5 * v)  # noqa: E731

    def np_lstm(cache=None):
        hh, cc = np.zeros((n_, u_), F32), np.zeros((n_, u_), F32)
        for t in range(t_):
            z = xs[t] @ lw_in + hh @ lw_rec + lbias
            i, f, g, o = sig(z[:, :u_]), sig(z[:, u_:2 * u_]), np.tanh(z[:, 2 * u_:3 * u_]), \
                sig(z[:, 3 * u_:])
            if cache is not None:
                cache.append((hh, cc, i, f, g, o))
            cc = f * cc + i * g
            hh = o * np.tanh(cc)
        return hh

    lstm_cache: list = []
    np_lstm(lstm_cache)

    def np_lstm_backward():
        dh, dc = ldh, np.zeros((n_, u_), F32)
        dw_in, dw_rec, db = np.zeros_like(lw_in), np.zeros_like(lw_rec), np.zeros_like(lbias)
        for t in range(t_ - 1, -1, -1):
            hp, cp, i, f, g, o = lstm_cache[t]
            tc = np.tanh(f * cp + i * g)
            dc = dc + dh * o * (1 - tc * tc)
            dz = np.concatenate([dc * g * i * (1 - i), dc * cp * f * (1 - f),
                                 dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
            dw_in += xs[t].T @ dz
            dw_rec += hp.T @ dz
            db += dz.sum(0)
            dh, dc = dz @ lw_rec.T, dc * f
        return dw_in, dw_rec, db

    cases.append(("recurrent.lstm_forward (40 steps, 64 x 128)",
                  lambda: kernels.recurrent.lstm_forward(xs, lw_in, lw_rec, lbias, lh, lc, ltc,
                                                         lgates, True), np_lstm))
    cases.append(("recurrent.lstm_backward (last step's gradient only)",
                  lambda: kernels.recurrent.lstm_backward(xs, lw_in, lw_rec, lh, lc, ltc, lgates,
                                                          ldh, ldz, None, ldw_in, ldw_rec, ldb,
                                                          True), np_lstm_backward))
    return cases


def kernel_part() -> None:
    rng = np.random.default_rng(0)
    print(f"{'kernel (float32, warm)':52} {'zoo us':>9} {'numpy us':>9} {'numpy/zoo':>9}")
    for name, zoo_fn, np_fn in _cases(rng):
        a, b = timeit(zoo_fn), timeit(np_fn)
        print(f"{name:52} {a:9.1f} {b:9.1f} {b / a:8.2f}x", flush=True)


def layer_part(workloads, threads: int = 1) -> None:
    from zoo.kernels import threads as zoo_threads

    c = time.perf_counter
    for name in workloads:
        trainer, xb, tb = steps.make_trainer(name)
        trainer._governor = None  # a fixed count, so every part is timed with the same one
        zoo_threads.set_threads(threads)
        model, loss, opt = trainer.model, trainer.loss, trainer.optimizer
        layers = model.layers
        for _ in range(5):
            trainer.train_step(xb, tb)
        fw, bw = np.zeros(len(layers)), np.zeros(len(layers))
        parts = np.zeros(2)  # loss, optimizer
        whole = []
        reps = 40
        for _ in range(reps):
            h = xb
            for i, layer in enumerate(layers):
                t0 = c()
                h = layer.forward(h, True)
                fw[i] += c() - t0
            t0 = c()
            loss.forward(h, tb)
            g = loss.backward()
            parts[0] += c() - t0
            for i in reversed(range(len(layers))):
                t0 = c()
                g = layers[i].backward(g)
                bw[i] += c() - t0
            t0 = c()
            opt.step(trainer._values_list, trainer._grads_list)
            parts[1] += c() - t0
            t0 = c()
            trainer.train_step(xb, tb)
            whole.append(c() - t0)
        scale = 1e6 / reps
        total = (fw.sum() + bw.sum() + parts.sum()) * scale
        step = statistics.median(whole) * 1e6
        print(f"\n{name}: one train_step {step:,.0f} us (median, large GEMMs on {threads} "
              f"BLAS thread{'s' if threads > 1 else ''}); the parts below add up to "
              f"{total:,.0f} us (means)")
        print(f"  {'layer':44} {'forward us':>11} {'backward us':>12} {'share':>6}")
        for i, layer in enumerate(layers):
            us = (fw[i] + bw[i]) * scale
            print(f"  {i} {layer!r:42} {fw[i] * scale:11.1f} {bw[i] * scale:12.1f} "
                  f"{us / total:6.1%}")
        print(f"  {'loss (forward + backward)':44} {parts[0] * scale:11.1f} {'':12} "
              f"{parts[0] * scale / total:6.1%}")
        print(f"  {'optimizer step':44} {parts[1] * scale:11.1f} {'':12} "
              f"{parts[1] * scale / total:6.1%}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"for the layers part: some of {', '.join(steps.WORKLOADS)}")
    parser.add_argument("--part", choices=("kernels", "layers", "both"), default="both")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads for the large GEMMs in the layers part (as "
                             "ZOO_BLAS_THREADS; default 1)")
    args = parser.parse_args(argv)
    if args.part in ("kernels", "both"):
        kernel_part()
    if args.part in ("layers", "both"):
        layer_part(args.workloads or list(steps.WORKLOADS), max(1, args.threads))


if __name__ == "__main__":
    main()
