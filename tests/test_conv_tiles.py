"""Float32 stride-1 Conv2D on the register tile (``zoo.kernels.conv_tiles``): against a slow
float64 numpy reference and the float64 layer, the same bits on 1, 2 and 3 threads, and the
kernels' argument checks. Nothing here depends on what the CPU computes: float32 results are
compared within a tolerance, thread counts with zoo itself."""

import numpy as np
import pytest

from zoo.errors import DataError
from zoo.kernels import conv_tiles, threads
from zoo.layers.conv import Conv2D


@pytest.fixture(autouse=True)
def one_thread_after():
    yield
    threads.set_threads(1)


def reference(x, w, b, pads, dilation, g):
    """The forward, and for the output gradient ``g`` the weight, bias and input gradients,
    in float64, one tap at a time over a zero-padded copy of ``x``."""
    x, w, g = (np.asarray(a, np.float64) for a in (x, w, g))
    (ph, pw), (dh, dw) = pads, dilation
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = g.shape[2:]
    y = np.zeros(g.shape)
    dw_ = np.zeros(w.shape)
    dxp = np.zeros(xp.shape)
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(None), slice(i * dh, i * dh + oh),
                      slice(j * dw, j * dw + ow))
            y += np.einsum("fc,ncyx->nfyx", w[:, :, i, j], xp[window])
            dw_[:, :, i, j] = np.einsum("nfyx,ncyx->fc", g, xp[window])
            dxp[window] += np.einsum("nfyx,fc->ncyx", g, w[:, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    dx = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return y, dw_, g.sum(axis=(0, 2, 3)), dx


def close(got, want, what):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale, err_msg=what)


def layer_for(shape, filters, kernel_size, padding, dilation=1, use_bias=True,
              dtype=np.float32, seed=0):
    layer = Conv2D(filters, kernel_size, padding=padding, dilation=dilation, use_bias=use_bias)
    layer.build(shape, np.random.default_rng(seed), dtype=dtype)
    if use_bias:
        layer.bias.value[...] = np.random.default_rng(seed + 1).standard_normal(filters)
    return layer


CASES = [
    # (batch, C, H, W), filters, kernel, padding, dilation
    ((3, 6, 14, 14), 16, 5, 0, 1),           # LeNet's second convolution
    ((2, 1, 28, 28), 6, 5, 2, 1),            # LeNet's first (few taps: threaded direct backward)
    ((3, 3, 9, 11), 5, 3, 1, 2),             # dilated, odd sizes
    ((1, 2, 7, 5), 33, (3, 2), (0, 1), 1),   # more filters than a tile, rectangular kernel
    ((2, 4, 8, 8), 17, 3, "same", 1),
    ((1, 5, 6, 13), 3, 1, 0, 1),             # 1x1
    ((2, 7, 5, 6), 9, (2, 4), 3, 1),         # padding wider than the kernel
    ((1, 2, 3, 3), 1, 3, 0, 1),              # a single output
    ((2, 3, 40, 37), 8, 3, 1, 1),            # outputs longer than a panel, many panels
]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape, filters, kernel, padding, dilation", CASES)
def test_forward_and_gradients_match_a_float64_reference(shape, filters, kernel, padding,
                                                         dilation, use_bias):
    layer = layer_for(shape[1:], filters, kernel, padding, dilation, use_bias)
    assert layer.tiles
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32 and y.shape == (shape[0], *layer.output_shape)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(g)
    want_y, want_dw, want_db, want_dx = reference(
        x, layer.weight.value, layer.bias.value if use_bias else None, layer.pads,
        layer.dilation, g)
    close(y, want_y, "forward")
    close(layer.weight.grad, want_dw, "weight gradient")
    if use_bias:
        close(layer.bias.grad, want_db, "bias gradient")
    assert dx.dtype == np.float32
    close(dx, want_dx, "input gradient")


@pytest.mark.parametrize("shape, filters, kernel, padding", [
    ((2, 6, 14, 14), 16, 5, 0), ((2, 1, 28, 28), 6, 5, 2)])
def test_the_first_layer_skips_the_input_gradient_with_the_same_weight_gradient(
        shape, filters, kernel, padding):
    full = layer_for(shape[1:], filters, kernel, padding)
    first = layer_for(shape[1:], filters, kernel, padding)
    first.needs_input_grad = False
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal((shape[0], *full.output_shape)).astype(np.float32)
    for layer in (full, first):
        layer.forward(x)
    assert full.backward(g).shape == x.shape
    assert first.backward(g) is None
    np.testing.assert_array_equal(first.weight.grad, full.weight.grad)
    np.testing.assert_array_equal(first.bias.grad, full.bias.grad)


@pytest.mark.parametrize("shape, filters, kernel, padding, dilation", CASES[:4])
def test_float32_agrees_with_the_float64_layer(shape, filters, kernel, padding, dilation):
    f32 = layer_for(shape[1:], filters, kernel, padding, dilation)
    f64 = layer_for(shape[1:], filters, kernel, padding, dilation, dtype=np.float64)
    assert f32.tiles and not f64.tiles  # float64 keeps its own exact path
    f64.weight.value[...] = f32.weight.value
    f64.bias.value[...] = f32.bias.value
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    y32, y64 = f32.forward(x.astype(np.float32)), f64.forward(x)
    g = rng.standard_normal(y64.shape)
    dx32, dx64 = f32.backward(g.astype(np.float32)), f64.backward(g)
    close(y32, y64, "forward")
    close(dx32, dx64, "input gradient")
    close(f32.weight.grad, f64.weight.grad, "weight gradient")
    close(f32.bias.grad, f64.bias.grad, "bias gradient")


def test_strided_layers_keep_im2col():
    strided = Conv2D(3, 3, stride=2)
    strided.build((2, 9, 9), np.random.default_rng(0), dtype=np.float32)
    assert not strided.tiles and not strided.direct_grad


def test_the_batch_size_can_change_between_calls():
    layer = layer_for((3, 6, 7), 5, 3, 1)
    rng = np.random.default_rng(4)
    for n in (4, 1, 4, 2):
        x = rng.standard_normal((n, 3, 6, 7)).astype(np.float32)
        y = layer.forward(x)
        g = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(g)
        want_y, want_dw, _, want_dx = reference(x, layer.weight.value, layer.bias.value,
                                                layer.pads, layer.dilation, g)
        close(y, want_y, f"forward, batch {n}")
        close(layer.weight.grad, want_dw, f"weight gradient, batch {n}")
        close(dx, want_dx, f"input gradient, batch {n}")


def _run(shape, filters, kernel, padding, count):
    threads.set_threads(count)
    layer = layer_for(shape[1:], filters, kernel, padding)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x, training=True)
    dx = layer.backward(rng.standard_normal(y.shape).astype(np.float32))
    return y, dx, layer.weight.grad.copy(), layer.bias.grad.copy()


@pytest.mark.parametrize("shape, filters, kernel, padding", [
    ((16, 6, 14, 14), 16, 5, 0), ((16, 1, 28, 28), 6, 5, 2), ((9, 4, 8, 8), 40, 3, 1)])
def test_the_same_bits_on_1_2_and_3_threads(shape, filters, kernel, padding, monkeypatch):
    jobs = []
    run_call = threads.run_call
    monkeypatch.setattr(threads, "run_call",
                        lambda fn, args, cuts: jobs.append(len(cuts) - 1)
                        or run_call(fn, args, cuts))
    one = _run(shape, filters, kernel, padding, 1)
    assert jobs and min(jobs) > 1  # every job cut into several blocks
    for count in (2, 3):
        other = _run(shape, filters, kernel, padding, count)
        for a, b, what in zip(one, other, ("forward", "input", "weight", "bias")):
            np.testing.assert_array_equal(a, b, err_msg=f"{what} on {count} threads")


def test_kernels_reject_bad_arrays():
    shape = (2, 3, 6, 6)
    w = np.zeros((4, 3, 3, 3), np.float32)
    need = 2 * 3 * 36 + conv_tiles.forward_reach(shape, (3, 3), (1, 1), (4, 4))
    with pytest.raises(DataError, match="tail"):
        conv_tiles.conv2d_forward(np.zeros(need - 1, np.float32), shape, w, None, (1, 1),
                                  (4, 4))
    with pytest.raises(DataError, match="channels"):
        conv_tiles.conv2d_forward(np.zeros(need, np.float32), shape, w[:, :2].copy(), None,
                                  (1, 1), (4, 4))
    with pytest.raises(DataError, match="float32"):
        conv_tiles.conv2d_forward(np.zeros(need, np.float64), shape, w, None, (1, 1), (4, 4))
    wide, transposed = conv_tiles.gradient_shapes(shape, 4, (4, 4))
    g = np.zeros((2, 4, 4, 4), np.float32)
    with pytest.raises(DataError, match="gt must be"):
        conv_tiles.conv2d_backward(g, np.zeros(need, np.float32), shape, w, (1, 1), (0, 0),
                                   np.zeros(wide, np.float32), np.zeros((1, 2, 3), np.float32),
                                   np.zeros_like(w), dx=np.zeros((2, 3, 6, 6), np.float32))
    with pytest.raises(DataError, match="grad must have shape"):
        conv_tiles.conv2d_backward(g[:, :3].copy(), np.zeros(need, np.float32), shape, w, (1, 1),
                                   (0, 0), None, np.zeros(transposed, np.float32),
                                   np.zeros_like(w))
    with pytest.raises(DataError, match="dx must be"):
        conv_tiles.conv2d_backward(g, np.zeros(need, np.float32), shape, w, (1, 1), (1, 0),
                                   np.zeros(wide, np.float32), np.zeros(transposed, np.float32),
                                   np.zeros_like(w), dx=np.zeros((2, 3, 6, 6), np.float32))
