"""Recurrent kernels, layers, sequence adapters and the rnn / lstm / gru plugins.

Every kernel and layer is compared with a plain numpy oracle that loops over time, backward
with float64 finite differences of that oracle (kernels) or of the layer itself (layers).
"""

import subprocess
import sys
import threading

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import ConfigError, DataError
from zoo.kernels import recurrent_native, threads
from zoo.kit.gradcheck import _numeric_grad, check_layer
from zoo.layers.base import Layer
from zoo.layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from zoo.layers.sequence import ImageToSequence, TimeMean, VectorToSequence
from zoo.model import Sequential

R = kernels.recurrent
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
LAYERS = {"rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}


# -- the oracle: plain numpy, batch-major, a Python loop over time ---------------------------
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def oracle(cell, x, w_in, w_rec, bias, h0, c0=None, bhn=None):
    """All states ``(N, T, U)`` (and the last cell state for the LSTM)."""
    u = w_rec.shape[0]
    h, c, out = h0, c0, []
    for t in range(x.shape[1]):
        xz = x[:, t] @ w_in + bias
        hz = h @ w_rec
        if cell == "rnn":
            h = np.tanh(xz + hz)
        elif cell == "lstm":
            z = xz + hz
            i, f = _sigmoid(z[:, :u]), _sigmoid(z[:, u:2 * u])
            g, o = np.tanh(z[:, 2 * u:3 * u]), _sigmoid(z[:, 3 * u:])
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            r = _sigmoid(xz[:, :u] + hz[:, :u])
            z = _sigmoid(xz[:, u:2 * u] + hz[:, u:2 * u])
            n = np.tanh(xz[:, 2 * u:] + r * (hz[:, 2 * u:] + bhn))
            h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1), c


def random_problem(cell, n, t, f, u, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    g = GATES[cell]
    p = {"x": rng.standard_normal((n, t, f)), "w_in": rng.standard_normal((f, g * u)) * 0.5,
         "w_rec": rng.standard_normal((u, g * u)) * 0.5, "bias": rng.standard_normal(g * u),
         "h0": rng.standard_normal((n, u)), "c0": rng.standard_normal((n, u)) if cell == "lstm"
         else None, "bhn": rng.standard_normal(u) if cell == "gru" else None}
    return {k: None if v is None else v.astype(dtype) for k, v in p.items()}


# -- the kernels, called the way the layers call them -----------------------------------------
def run_kernels(cell, p, zero_init=False, dh_out=None):
    """Forward (and backward, given ``dh_out`` batch-major) through zoo.kernels.recurrent."""
    x = np.ascontiguousarray(p["x"].transpose(1, 0, 2))
    t, n, f = x.shape
    u = p["w_rec"].shape[0]
    dt = x.dtype
    g = GATES[cell] * u
    h = np.zeros((t + 1, n, u), dt)
    if not zero_init:
        h[0] = p["h0"]
    gates = np.empty((t, n, g), dt)
    out = {}
    if cell == "rnn":
        R.rnn_forward(x, p["w_in"], p["w_rec"], p["bias"], h, gates, zero_init)
    elif cell == "lstm":
        c = np.zeros((t + 1, n, u), dt)
        if not zero_init:
            c[0] = p["c0"]
        tanh_c = np.empty((t, n, u), dt)
        R.lstm_forward(x, p["w_in"], p["w_rec"], p["bias"], h, c, tanh_c, gates, zero_init)
        out["c"] = c[t]
    else:
        hn = np.empty((t, n, u), dt)
        R.gru_forward(x, p["w_in"], p["w_rec"], p["bias"], p["bhn"], h, hn, gates, zero_init)
    out["h"] = h[1:].transpose(1, 0, 2)
    if dh_out is None:
        return out
    dh = np.ascontiguousarray(dh_out.transpose(1, 0, 2) if dh_out.ndim == 3 else dh_out)
    dz = np.empty((t, n, g), dt)
    dx = np.empty((t, n, f), dt)
    grads = {"w_in": np.empty_like(p["w_in"]), "w_rec": np.empty_like(p["w_rec"]),
             "bias": np.empty_like(p["bias"])}
    common = (grads["w_in"], grads["w_rec"], grads["bias"])
    if cell == "rnn":
        grads["h0"] = R.rnn_backward(x, p["w_in"], p["w_rec"], h, dh, dz, dx, *common,
                                     zero_init)
    elif cell == "lstm":
        grads["h0"], grads["c0"] = R.lstm_backward(x, p["w_in"], p["w_rec"], h, c, tanh_c,
                                                   gates, dh, dz, dx, *common, zero_init)
    else:
        grads["bhn"] = np.empty_like(p["bhn"])
        grads["h0"] = R.gru_backward(x, p["w_in"], p["w_rec"], h, hn, gates, dh, dz,
                                     np.empty_like(dz), dx, *common, grads["bhn"], zero_init)
    grads["x"] = dx.transpose(1, 0, 2)
    out["grads"] = grads
    return out


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("features", [1, 3, R.FUSE_MAX_FEATURES + 3])
@pytest.mark.parametrize("zero_init", [False, True])
def test_forward_kernels_match_the_oracle(cell, features, zero_init):
    p = random_problem(cell, n=5, t=4, f=features, u=7)
    if zero_init:
        p["h0"] = np.zeros_like(p["h0"])
        p["c0"] = None if p["c0"] is None else np.zeros_like(p["c0"])
    want, want_c = oracle(cell, p["x"], p["w_in"], p["w_rec"], p["bias"], p["h0"], p["c0"],
                          p["bhn"])
    got = run_kernels(cell, p, zero_init)
    np.testing.assert_allclose(got["h"], want, rtol=1e-12, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(got["c"], want_c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_float32_kernels_agree_with_the_float64_oracle(cell):
    # float32 uses the rational tanh; over 30 steps its error must stay at float32 level.
    p = random_problem(cell, n=8, t=30, f=2, u=16, seed=3)
    p["w_rec"] *= 0.3
    want, _ = oracle(cell, p["x"], p["w_in"], p["w_rec"], p["bias"], p["h0"], p["c0"], p["bhn"])
    got = run_kernels(cell, {k: None if v is None else v.astype(np.float32)
                             for k, v in p.items()})
    assert got["h"].dtype == np.float32
    np.testing.assert_allclose(got["h"], want, atol=2e-5)


def test_the_float32_tanh_is_accurate_and_saturates():
    x = np.concatenate([np.linspace(-12, 12, 20001), [-1e30, 1e30, 0.0]]).astype(np.float32)
    p = {"x": x.reshape(-1, 1, 1), "w_in": np.ones((1, 1), np.float32),
         "w_rec": np.zeros((1, 1), np.float32), "bias": np.zeros(1, np.float32),
         "h0": np.zeros((len(x), 1), np.float32), "c0": None, "bhn": None}
    got = run_kernels("rnn", p, zero_init=True)["h"].ravel()
    want = np.tanh(x.astype(np.float64))
    assert np.abs(got - want).max() < 5e-7
    assert got[-3] == -1 and got[-2] == 1 and got[-1] == 0


def test_the_float32_lstm_gates_are_accurate_and_saturate():
    # The four gates of a float32 LSTM share one division (``_lstm_gates_f32``): every gate
    # must still be within a few float32 ulps of the float64 functions, on the whole range.
    z = np.concatenate([np.linspace(-30, 30, 20001), [-1e30, 1e30, 0.0]]).astype(np.float32)
    n = len(z)
    x = z.reshape(1, n, 1)
    w_in = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)  # every gate's pre-activation is z
    h = np.zeros((2, n, 1), np.float32)
    c = np.zeros((2, n, 1), np.float32)
    tanh_c = np.empty((1, n, 1), np.float32)
    gates = np.empty((1, n, 4), np.float32)
    R.lstm_forward(x, w_in, np.zeros((1, 4), np.float32), np.zeros(4, np.float32), h, c, tanh_c,
                   gates, zero_init=True)
    z64 = z.astype(np.float64)
    sig, tanh = 0.5 + 0.5 * np.tanh(z64 / 2), np.tanh(z64)
    for k, want in enumerate((sig, sig, tanh, sig)):
        assert np.abs(gates[0, :, k] - want).max() < 6e-7
    assert np.abs(c[1, :, 0] - sig * tanh).max() < 1e-6
    np.testing.assert_allclose(gates[0, -3], [0, 0, -1, 0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(gates[0, -2], [1, 1, 1, 1], rtol=0, atol=1e-7)
    assert list(gates[0, -1]) == [0.5, 0.5, 0, 0.5]  # exact at 0


def _numeric(f, array, eps=1e-6):
    """Central differences of ``f()`` for every entry of ``array`` (zoo.kit.gradcheck's)."""
    _, grads = _numeric_grad(f, array, eps, max_entries=array.size, rng=None)
    return grads.reshape(array.shape)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("every_step", [True, False])
@pytest.mark.parametrize("features", [2, R.FUSE_MAX_FEATURES + 1])
def test_backward_kernels_match_finite_differences_of_the_oracle(cell, every_step, features):
    p = random_problem(cell, n=3, t=4, f=features, u=3, seed=1)
    rng = np.random.default_rng(2)
    dh_out = rng.standard_normal((3, 4, 3) if every_step else (3, 3))

    def loss():
        h, _ = oracle(cell, p["x"], p["w_in"], p["w_rec"], p["bias"], p["h0"], p["c0"],
                      p["bhn"])
        return float(np.sum((h if every_step else h[:, -1]) * dh_out))

    grads = run_kernels(cell, p, dh_out=dh_out)["grads"]
    for name in ("x", "w_in", "w_rec", "bias", "h0", "c0", "bhn"):
        if p[name] is None:
            continue
        np.testing.assert_allclose(grads[name], _numeric(loss, p[name]), rtol=1e-6, atol=1e-7,
                                   err_msg=f"{cell} d{name}")


def test_lstm_backward_takes_the_gradient_of_the_final_cell_state():
    p = random_problem("lstm", n=2, t=3, f=2, u=3, seed=4)
    dc = np.random.default_rng(5).standard_normal((2, 3))

    def loss():
        _, c = oracle("lstm", p["x"], p["w_in"], p["w_rec"], p["bias"], p["h0"], p["c0"])
        return float(np.sum(c * dc))

    x = np.ascontiguousarray(p["x"].transpose(1, 0, 2))
    h = np.zeros((4, 2, 3))
    c = np.zeros((4, 2, 3))
    h[0], c[0] = p["h0"], p["c0"]
    tanh_c, gates, dz, dx = np.empty((3, 2, 3)), np.empty((3, 2, 12)), np.empty((3, 2, 12)), \
        np.empty((3, 2, 2))
    R.lstm_forward(x, p["w_in"], p["w_rec"], p["bias"], h, c, tanh_c, gates)
    dh0, dc0 = R.lstm_backward(x, p["w_in"], p["w_rec"], h, c, tanh_c, gates, np.zeros((2, 3)),
                               dz, dx, np.empty((2, 12)), np.empty((3, 12)), np.empty(12),
                               dc_out=dc)
    np.testing.assert_allclose(dc0, _numeric(loss, p["c0"]), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dh0, _numeric(loss, p["h0"]), rtol=1e-6, atol=1e-8)


@pytest.fixture
def split_blocks(monkeypatch):
    """Cut even tiny batches into 3 row blocks; one thread again afterwards."""
    monkeypatch.setattr(R, "MIN_WORK", 0)
    monkeypatch.setattr(R, "ROWS_PER_BLOCK", 2)
    assert R._blocks(7, 1) == 3
    yield
    threads.set_threads(1)


# float32 steps multiply by packed weights (zoo.kernels.packed), float64 ones call numpy's
# BLAS or, where it cannot be called, plain loops. Narrow inputs (3 features) have their
# input-weight gradient summed in the time loops, block by block; wide ones (20) by one GEMM.
@pytest.mark.parametrize("dtype, gemm", [(np.float32, "packed"), (np.float64, "blas"),
                                         (np.float64, "loops")])
@pytest.mark.parametrize("features", [3, 20])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_row_blocks_give_the_same_bits_on_any_thread_count(cell, features, dtype, gemm,
                                                           split_blocks, monkeypatch):
    if gemm == "loops":  # as where numpy's BLAS cannot be called from the kernels
        monkeypatch.setattr(kernels.cblas, "gemm_function", lambda dtype: (0, np.int64(0)))
    seen = set()  # the threads that ran blocks

    def run_blocks(fn, blocks, run=threads.run_blocks):
        def spy(i):
            seen.add(threading.current_thread().name)
            fn(i)
        run(spy, blocks)

    monkeypatch.setattr(threads, "run_blocks", run_blocks)
    native = []  # the blocks of each native job (float32's time loops)

    def run_call(fn, args, cuts, run=threads.run_call):
        native.append(len(cuts) - 1)
        run(fn, args, cuts)

    monkeypatch.setattr(threads, "run_call", run_call)
    p = random_problem(cell, n=7, t=5, f=features, u=4, dtype=dtype, seed=6)
    dh = np.random.default_rng(7).standard_normal((7, 5, 4)).astype(dtype)
    want, _ = oracle(cell, *(p[k].astype(np.float64) if p[k] is not None else None
                             for k in ("x", "w_in", "w_rec", "bias", "h0", "c0", "bhn")))
    results = {}
    for count in (1, 2, 3):
        threads.set_threads(count)
        seen.clear()
        native.clear()
        results[count] = run_kernels(cell, p, dh_out=dh)
        assert (seen == {"MainThread"}) if count == 1 else seen
        # float32's loops: a forward and a backward job of 3 blocks; float64's: Python blocks
        assert native == ([3, 3] if dtype == np.float32 else [])
    np.testing.assert_allclose(results[1]["h"], want, atol=1e-5)
    if dtype == np.float32:  # the float32 gradients against float64's (checked elsewhere)
        exact = run_kernels(cell, {k: None if v is None else v.astype(np.float64)
                                   for k, v in p.items()}, dh_out=dh.astype(np.float64))
        for name, grad in results[1]["grads"].items():
            np.testing.assert_allclose(grad, exact["grads"][name], rtol=1e-4, atol=1e-4,
                                       err_msg=name)
    for count in (2, 3):
        np.testing.assert_array_equal(results[count]["h"], results[1]["h"])
        for name, grad in results[count]["grads"].items():
            np.testing.assert_array_equal(grad, results[1]["grads"][name], err_msg=name)


def test_float32_blocks_take_the_final_cell_states_gradient_too(split_blocks):
    # float32's backward blocks (native jobs) start from the given dL/dc of the final state,
    # each from its own rows: the float64 result, to float32's rounding, on any thread count
    p = random_problem("lstm", n=7, t=4, f=2, u=5, seed=8)
    dc = np.random.default_rng(9).standard_normal((7, 5))
    dh = np.random.default_rng(10).standard_normal((7, 5))

    def initial_gradients(dtype):
        q = {k: None if v is None else v.astype(dtype) for k, v in p.items()}
        x = np.ascontiguousarray(q["x"].transpose(1, 0, 2))
        h, c = np.zeros((5, 7, 5), dtype), np.zeros((5, 7, 5), dtype)
        h[0], c[0] = q["h0"], q["c0"]
        tanh_c, gates, dz = (np.empty(s, dtype) for s in ((4, 7, 5), (4, 7, 20), (4, 7, 20)))
        R.lstm_forward(x, q["w_in"], q["w_rec"], q["bias"], h, c, tanh_c, gates)
        return R.lstm_backward(x, q["w_in"], q["w_rec"], h, c, tanh_c, gates,
                               dh.astype(dtype), dz, None, np.empty((2, 20), dtype),
                               np.empty((5, 20), dtype), np.empty(20, dtype),
                               dc_out=dc.astype(dtype))

    want = initial_gradients(np.float64)
    got = {}
    for count in (1, 3):
        threads.set_threads(count)
        got[count] = initial_gradients(np.float32)
    for one, three, exact in zip(got[1], got[3], want):
        assert one.dtype == np.float32
        np.testing.assert_allclose(one, exact, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(three, one)


def _at_offset(a, offset):
    """A copy of ``a`` whose data starts ``offset`` floats past a cache line."""
    raw = kernels.aligned.empty(a.size + offset, a.dtype)
    out = raw[offset:].reshape(a.shape)
    out[...] = a
    return out


def _run_at_offset(cell, p, dh, offset, zero_init=True):
    """Forward and backward on time-major buffers that all start ``offset`` floats past a
    cache line; every output, as one dict."""
    def buf(shape, fill=0.0):
        return _at_offset(np.full(shape, fill, np.float32), offset)

    x = _at_offset(np.ascontiguousarray(p["x"].transpose(1, 0, 2)), offset)
    t, n, f = x.shape
    u = p["w_rec"].shape[0]
    g = GATES[cell] * u
    w_in, w_rec, bias = (_at_offset(p[k], offset) for k in ("w_in", "w_rec", "bias"))
    h, gates, dz, dx = buf((t + 1, n, u)), buf((t, n, g)), buf((t, n, g)), buf((t, n, f))
    dw_in, dw_rec, db = buf(w_in.shape), buf(w_rec.shape), buf(bias.shape)
    dh = _at_offset(dh, offset)
    out = {"h": h, "gates": gates, "dz": dz, "dx": dx, "dw_in": dw_in, "dw_rec": dw_rec,
           "db": db}
    if cell == "rnn":
        R.rnn_forward(x, w_in, w_rec, bias, h, gates, zero_init)
        R.rnn_backward(x, w_in, w_rec, h, dh, dz, dx, dw_in, dw_rec, db, zero_init)
    else:
        c, tanh_c = buf((t + 1, n, u)), buf((t, n, u))
        R.lstm_forward(x, w_in, w_rec, bias, h, c, tanh_c, gates, zero_init)
        R.lstm_backward(x, w_in, w_rec, h, c, tanh_c, gates, dh, dz, dx, dw_in, dw_rec, db,
                        zero_init)
        out.update(c=c, tanh_c=tanh_c)
    return out


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_workload_sized_blocks_give_the_same_bits_on_any_thread_count_and_alignment(cell):
    # Sizes where the cells run their wide vector loops (72 units: 4 vectors of 16 and a
    # remainder) on two row blocks of 32 rows, on 1, 2 and 3 threads, with every buffer on a
    # cache line or 1 or 4 floats past one: the bits may depend on none of it.
    p = random_problem(cell, n=64, t=6, f=1, u=72, dtype=np.float32, seed=11)
    p["w_rec"] *= 0.2
    assert R._blocks(64, 64 * 72 * GATES[cell] * 72) == 2
    dh = np.random.default_rng(12).standard_normal((64, 72)).astype(np.float32)
    results = []
    try:
        for count, offset in ((1, 0), (2, 0), (3, 0), (1, 1), (2, 4), (1, 4)):
            threads.set_threads(count)
            results.append(_run_at_offset(cell, p, dh, offset))
    finally:
        threads.set_threads(1)
    for other in results[1:]:
        for name, want in results[0].items():
            np.testing.assert_array_equal(other[name], want, err_msg=name)
    zeros = np.zeros((64, 72))
    want, _ = oracle(cell, *(p[k].astype(np.float64) for k in ("x", "w_in", "w_rec", "bias")),
                     zeros, zeros)
    np.testing.assert_allclose(results[0]["h"][1:].transpose(1, 0, 2), want, atol=2e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("steps,zero_init", [(6, True), (9, True), (7, False)])
def test_without_an_input_gradient_the_step_gradients_stay_in_the_blocks(cell, steps,
                                                                         zero_init):
    # A first layer needs no dx: then (narrow inputs, float32) nothing reads the per-step
    # pre-activation gradients after the loop, each block keeps its last few steps' of them in
    # a ring of its own and dz is never written; every gradient is the same bits as with dx,
    # the recurrent weights' too, made once per ring of steps instead of once a step (steps
    # with a weight gradient: 5, 8 and 7, full rings and a partial last one).
    assert recurrent_native.RING_STEPS[:2] == (4, 4)  # rnn, lstm
    p = random_problem(cell, n=64, t=steps, f=1, u=72, dtype=np.float32, seed=13)
    dh = np.random.default_rng(14).standard_normal((64, 72)).astype(np.float32)
    with_dx = _run_at_offset(cell, p, dh, 0, zero_init)
    x = np.ascontiguousarray(p["x"].transpose(1, 0, 2))
    t, n, _ = x.shape
    g = GATES[cell] * 72
    dz = np.full((t, n, g), 7.0, np.float32)
    dw_in, dw_rec, db = (np.empty_like(p[k]) for k in ("w_in", "w_rec", "bias"))
    try:
        for count in (1, 2):
            threads.set_threads(count)
            if cell == "rnn":
                R.rnn_backward(x, p["w_in"], p["w_rec"], with_dx["h"], dh, dz, None, dw_in,
                               dw_rec, db, zero_init)
            else:
                R.lstm_backward(x, p["w_in"], p["w_rec"], with_dx["h"], with_dx["c"],
                                with_dx["tanh_c"], with_dx["gates"], dh, dz, None, dw_in,
                                dw_rec, db, zero_init)
            assert (dz == 7.0).all()  # left as it was
            for name, got in (("dw_in", dw_in), ("dw_rec", dw_rec), ("db", db)):
                np.testing.assert_array_equal(got, with_dx[name], err_msg=name)
    finally:
        threads.set_threads(1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_gemm_is_numpys_or_plain_loops(dtype):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((9, 7, 20)).astype(dtype)  # row slices of larger arrays, as in
    b = rng.standard_normal((20, 12)).astype(dtype)     # the time loops
    c = np.full((9, 7, 12), np.nan, dtype)
    f = kernels.cblas.gemm_function(dtype)
    kernels.cblas.gemm(f, a[4, 2:6], b, c[4, 2:6])
    if f[0]:  # numpy's own BLAS function: numpy's bits
        np.testing.assert_array_equal(c[4, 2:6], np.matmul(a[4, 2:6], b))
    kernels.cblas.gemm((0, np.int64(0)), a[5, 1:7], b, c[5, 1:7])
    np.testing.assert_allclose(c[5, 1:7], a[5, 1:7].astype(np.float64) @ b, rtol=1e-5,
                               atol=1e-5)
    assert np.isnan(c[4, :2]).all() and np.isnan(c[4, 6:]).all()  # nothing else written


def test_the_row_blocks_depend_on_the_sizes_alone():
    assert R._blocks(64, 64 * 128 * 128) == 2  # the rnn workload: two blocks of 32 rows
    assert R._blocks(64, 1000) == 1  # too little work per step to split
    assert R._blocks(1024, 1 << 30) == R.MAX_BLOCKS
    assert R._blocks(31, 1 << 30) == 1


def test_kernel_wrappers_reject_bad_arrays():
    p = random_problem("rnn", n=2, t=3, f=1, u=4)
    x = np.ascontiguousarray(p["x"].transpose(1, 0, 2))
    h, gates = np.zeros((4, 2, 4)), np.zeros((3, 2, 4))
    with pytest.raises(DataError, match="x must be a C-contiguous"):
        R.rnn_forward(p["x"].transpose(1, 0, 2), p["w_in"], p["w_rec"], p["bias"], h, gates)
    with pytest.raises(DataError, match=r"h must have shape \(4, 2, 4\)"):
        R.rnn_forward(x, p["w_in"], p["w_rec"], p["bias"], h[:3], gates)
    with pytest.raises(DataError, match="bias must be a float64 array"):
        R.rnn_forward(x, p["w_in"], p["w_rec"], p["bias"].astype(np.float32), h, gates)
    with pytest.raises(DataError, match="w_rec must have shape"):
        R.lstm_forward(x, p["w_in"], p["w_rec"], p["bias"], h, h, gates, gates)


# -- layers ----------------------------------------------------------------------------------
def built(layer, shape, dtype=np.float64, seed=0):
    layer.dtype = dtype
    layer.build(shape, np.random.default_rng(seed))
    return layer


def layer_oracle(layer, x, state=None):
    cell = {SimpleRNN: "rnn", LSTM: "lstm", GRU: "gru"}[type(layer)]
    n = len(x)
    h0 = np.zeros((n, layer.units)) if state is None else (state[0] if cell == "lstm" else state)
    c0 = None if cell != "lstm" else (np.zeros((n, layer.units)) if state is None else state[1])
    bhn = layer.recurrent_bias.value if cell == "gru" else None
    xs = x[:, ::-1] if layer.reverse else x
    h, _ = oracle(cell, xs, layer.input_weight.value, layer.recurrent_weight.value,
                  layer.bias.value, h0, c0, bhn)
    if not layer.return_sequences:
        return h[:, -1]
    return h[:, ::-1] if layer.reverse else h


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_layers_match_the_oracle(cell, return_sequences, reverse):
    layer = built(LAYERS[cell](6, return_sequences=return_sequences, reverse=reverse), (5, 3))
    x = np.random.default_rng(1).standard_normal((4, 5, 3))
    out = layer.forward(x)
    assert out.shape == ((4, 5, 6) if return_sequences else (4, 6))
    np.testing.assert_allclose(out, layer_oracle(layer, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_initial_state_argument_and_attribute(cell):
    layer = built(LAYERS[cell](4, return_sequences=True), (3, 2))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 2))
    state = rng.standard_normal((2, 4))
    if cell == "lstm":
        state = (state, rng.standard_normal((2, 4)))
    want = layer_oracle(layer, x, state)
    np.testing.assert_allclose(layer.forward(x, initial_state=state), want, atol=1e-12)
    layer.initial_state = state
    np.testing.assert_allclose(layer.forward(x), want, atol=1e-12)
    layer.initial_state = None
    np.testing.assert_allclose(layer.forward(x), layer_oracle(layer, x), atol=1e-12)
    layer.backward(np.ones((2, 3, 4)))
    assert layer.initial_state_grad is None


CASES = [  # (units, (steps, features), return_sequences, reverse)
    (5, (4, 3), False, False),
    (5, (4, 3), True, False),
    (3, (1, 2), False, False),  # a single step
    (3, (1, 2), True, True),
    (7, (3, 1), True, True),
    (2, (5, R.FUSE_MAX_FEATURES + 2), False, True),  # wide input: projected by one GEMM
]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("units, shape, return_sequences, reverse", CASES)
def test_layer_gradients(cell, units, shape, return_sequences, reverse):
    layer = LAYERS[cell](units, return_sequences=return_sequences, reverse=reverse)
    check_layer(layer, shape, batch=3)


class WithInitialState(Layer):
    """A recurrent layer whose initial state is a trainable parameter, for the gradient check."""

    def __init__(self, layer, batch):
        super().__init__()
        self.layer, self.batch = layer, batch

    def build(self, input_shape, rng):
        self.layer.dtype = self.dtype
        shape = self.layer.build(input_shape, rng)
        u = self.layer.units
        self.h0 = self.add_parameter("h0", rng.standard_normal((self.batch, u)))
        if isinstance(self.layer, LSTM):
            self.c0 = self.add_parameter("c0", rng.standard_normal((self.batch, u)))
        self.built = True
        return shape

    def _state(self):
        return (self.h0.value, self.c0.value) if isinstance(self.layer, LSTM) else self.h0.value

    def forward(self, x, training=False):
        return self.layer.forward(x, training, initial_state=self._state())

    def backward(self, grad_out):
        dx = self.layer.backward(grad_out)
        grad = self.layer.initial_state_grad
        if isinstance(self.layer, LSTM):
            self.h0.grad[...], self.c0.grad[...] = grad
        else:
            self.h0.grad[...] = grad
        return dx

    def named_parameters(self, prefix=""):
        return self.layer.named_parameters(prefix + "layer.") + super().named_parameters(prefix)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_initial_state_gradient(cell, return_sequences):
    layer = LAYERS[cell](4, return_sequences=return_sequences)
    check_layer(WithInitialState(layer, batch=3), (3, 2), batch=3)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional(cell, return_sequences):
    bi = Bidirectional(LAYERS[cell](3, return_sequences=return_sequences))
    check_layer(bi, (4, 2), batch=3)
    x = np.random.default_rng(3).standard_normal((2, 4, 2))
    out = bi.forward(x)
    fwd, bwd = bi.forward_layer, bi.backward_layer
    assert bwd.reverse and not fwd.reverse
    np.testing.assert_allclose(out, np.concatenate(
        [layer_oracle(fwd, x), layer_oracle(bwd, x)], axis=-1), atol=1e-12)
    names = [name for name, _ in bi.named_parameters()]
    assert names[0] == "forward.input_weight" and names[-1].startswith("backward.")
    assert len(names) == len(set(names)) == 2 * len(fwd.parameters())


def test_bidirectional_models_save_and_load_by_name():
    def model(seed):
        m = Sequential([Bidirectional(LSTM(3, return_sequences=True)), GRU(2)])
        m.build((4, 2), np.random.default_rng(seed))
        return m

    a, b = model(0), model(1)
    x = np.random.default_rng(4).standard_normal((2, 4, 2)).astype(np.float32)
    assert not np.allclose(a.forward(x), b.forward(x))
    assert "0.backward.recurrent_weight" in a.state_dict()
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_initialisation():
    lstm = built(LSTM(6), (3, 2), dtype=np.float32)
    bias = lstm.bias.value.reshape(4, 6)
    np.testing.assert_array_equal(bias, np.stack([np.zeros(6), np.ones(6), np.zeros(6),
                                                  np.zeros(6)]))  # forget gate at 1
    assert not built(LSTM(6, unit_forget_bias=False), (3, 2)).bias.value.any()
    for layer in (lstm, built(GRU(5), (3, 2)), built(SimpleRNN(4), (3, 2))):
        u = layer.units
        for block in np.split(layer.recurrent_weight.value.astype(np.float64),
                              layer.GATES, axis=1):
            np.testing.assert_allclose(block.T @ block, np.eye(u), atol=1e-6)
    assert built(GRU(5), (3, 2)).recurrent_bias.value.shape == (5,)
    assert [n for n, _ in lstm.named_parameters()] == ["input_weight", "recurrent_weight",
                                                        "bias"]


def test_outputs_are_fresh_arrays_and_float32_stays_float32():
    layer = built(LSTM(4, return_sequences=True), (3, 2), dtype=np.float32)
    x = np.random.default_rng(5).standard_normal((2, 3, 2)).astype(np.float32)
    first = layer.forward(x)
    kept = first.copy()
    layer.forward(x * 2)
    np.testing.assert_array_equal(first, kept)
    assert first.dtype == np.float32
    assert layer.backward(np.ones_like(first)).dtype == np.float32
    # a longer sequence and a new batch size reuse the same weights
    assert layer.forward(np.zeros((5, 7, 2), np.float32)).shape == (5, 7, 4)


@pytest.mark.parametrize("make", [lambda: LSTM(3), lambda: Bidirectional(GRU(3))])
def test_skipping_the_input_gradient(make):
    x = np.random.default_rng(6).standard_normal((2, 4, 2))
    grads = []
    for needed in (True, False):
        layer = make()
        built(layer, (4, 2))
        layer.needs_input_grad = needed
        out = layer.forward(x, True)
        dx = layer.backward(np.ones_like(out))
        assert (dx is None) == (not needed)
        grads.append([p.grad.copy() for p in layer.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_layer_errors():
    with pytest.raises(ConfigError, match="LSTM: units must be a positive integer"):
        LSTM(0)
    with pytest.raises(ConfigError, match="return_sequences must be True or False"):
        GRU(3, return_sequences="yes")
    with pytest.raises(ConfigError, match=r"SimpleRNN expects sequences \(batch, steps, "
                                          r"features\)"):
        SimpleRNN(3).build((8,), np.random.default_rng(0))
    layer = built(GRU(3), (4, 2))
    with pytest.raises(DataError, match=r"GRU expects input of shape \(batch, steps, 2\)"):
        layer.forward(np.zeros((2, 4, 3)))
    with pytest.raises(DataError, match=r"initial_state must have shape \(2, 3\)"):
        layer.forward(np.zeros((2, 4, 2)), initial_state=np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"an \(h0, c0\) pair"):
        built(LSTM(3), (4, 2)).forward(np.zeros((2, 4, 2)), initial_state=np.zeros((2, 3)))
    layer.forward(np.zeros((2, 4, 2)))
    with pytest.raises(DataError, match=r"backward expects a gradient of shape \(2, 3\)"):
        layer.backward(np.zeros((2, 4, 3)))
    with pytest.raises(ConfigError, match="before forward"):
        built(GRU(3), (4, 2)).backward(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="Bidirectional wraps"):
        Bidirectional(TimeMean())


# -- sequence adapters -----------------------------------------------------------------------
def test_adapters_forward():
    img = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    rows = built(ImageToSequence(), (3, 4, 5))
    assert rows.output_shape == (4, 15)
    out = rows.forward(img)
    np.testing.assert_array_equal(out[1, 2], np.concatenate([img[1, c, 2] for c in range(3)]))
    np.testing.assert_array_equal(rows.backward(out), img)
    assert built(ImageToSequence(), (1, 4, 5)).forward(img[:, :1]).shape == (2, 4, 5)
    vec = built(VectorToSequence(), (6,))
    np.testing.assert_array_equal(vec.forward(img.reshape(2, -1)[:, :6])[:, :, 0],
                                  img.reshape(2, -1)[:, :6])
    seq = np.random.default_rng(0).standard_normal((2, 5, 3))
    np.testing.assert_allclose(built(TimeMean(), (5, 3)).forward(seq), seq.mean(axis=1))
    with pytest.raises(ConfigError, match="ImageToSequence expects images"):
        ImageToSequence().build((4, 5), np.random.default_rng(0))


@pytest.mark.parametrize("layer, shape", [(ImageToSequence(), (3, 4, 5)),
                                          (ImageToSequence(), (1, 3, 2)),
                                          (VectorToSequence(), (6,)), (TimeMean(), (5, 3))])
def test_adapter_gradients(layer, shape):
    check_layer(layer, shape, batch=2)


# -- the plugins -----------------------------------------------------------------------------
SMALL = {"hidden": 4}


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_plugins_conform(arch, fresh_host):
    from zoo.testing import check_architecture

    done = check_architecture(arch, options=SMALL)
    assert "sequence/classify: gradients" in done and "image/regress: shapes" in done


@pytest.mark.parametrize("options", [
    {"bidirectional": True, "readout": "mean"},
    {"layers": 2, "dropout": 0.25},
    {"layers": 2, "bidirectional": True},
])
def test_plugin_options(options, fresh_host):
    from zoo.testing import check_architecture

    check_architecture("gru", kinds=["sequence"], tasks=["classify"],
                       options=dict(SMALL, **options), checks=["shapes", "gradients"])


def test_plugins_adapt_to_the_data(fresh_host):
    from zoo.data.spec import DataSpec
    from zoo.testing import build_model

    arch = fresh_host.get_host().architectures.get("lstm")
    for spec, first in [(DataSpec((8, 8), "sequence", "classify", 10), Bidirectional),
                        (DataSpec((1, 8, 8), "image", "classify", 10), ImageToSequence),
                        (DataSpec((40,), "vector", "regress", 2), VectorToSequence)]:
        model = build_model(arch, spec, dict(SMALL, bidirectional=True, readout="mean"))
        assert isinstance(model.layers[0], first)
        assert model.output_shape == (spec.output_size,)
    with pytest.raises(ConfigError, match="lstm: option hidden must be a positive integer"):
        arch.build(DataSpec((8, 8), "sequence", "classify", 10),
                   arch.resolve_options({"hidden": 0}))
    assert arch.defaults["clip_norm"] > 0


def test_plugin_modules_do_not_import_numerics():
    code = ("import sys, zoo_plugins.rnn, zoo_plugins.lstm, zoo_plugins.gru; "
            "assert 'numba' not in sys.modules and 'zoo.layers.recurrent' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
