"""Conv1D / Conv2D and their im2col kernels against direct-loop numpy oracles."""

import itertools

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.conv import Conv1D, Conv2D, conv_geometry


def conv2d_oracle(x, w, b, stride, pads, dilation, out_hw):
    """Direct loops over every output, filter and tap; padding reads as zero."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    out = np.zeros((n, f, *out_hw))
    for s, o, y, z in itertools.product(range(n), range(f), range(out_hw[0]), range(out_hw[1])):
        acc = 0.0 if b is None else b[o]
        for ch, i, j in itertools.product(range(c), range(kh), range(kw)):
            iy = y * stride[0] + i * dilation[0] - pads[0]
            ix = z * stride[1] + j * dilation[1] - pads[1]
            if 0 <= iy < h and 0 <= ix < wd:
                acc += x[s, ch, iy, ix] * w[o, ch, i, j]
        out[s, o, y, z] = acc
    return out


def conv1d_oracle(x, w, b, stride, pad, dilation, out_t):
    n, t, feat = x.shape
    k, _, f = w.shape
    out = np.zeros((n, out_t, f))
    for s, y, o in itertools.product(range(n), range(out_t), range(f)):
        acc = 0.0 if b is None else b[o]
        for i, ch in itertools.product(range(k), range(feat)):
            it = y * stride + i * dilation - pad
            if 0 <= it < t:
                acc += x[s, it, ch] * w[i, ch, o]
        out[s, y, o] = acc
    return out


CASES_2D = [
    # kernel_size, stride, padding, dilation, input (C, H, W)
    (3, 1, "valid", 1, (2, 6, 5)),
    (3, 1, "same", 1, (1, 5, 7)),
    (3, 2, "same", 1, (2, 7, 6)),
    ((2, 3), (2, 1), "same", 1, (2, 6, 6)),
    (3, 2, 1, 1, (3, 7, 7)),
    ((3, 2), 1, (2, 0), 2, (2, 7, 6)),
    (2, 3, "valid", (2, 1), (1, 8, 5)),
    (5, 1, 2, 1, (1, 9, 9)),
    (1, 1, "valid", 1, (3, 4, 5)),
]


# The direct kernel only serves stride 1, so only those cases run through it as well.
DIRECT_CASES = [(*case, direct) for case in CASES_2D for direct in (False, True)
                if not direct or case[1] in (1, (1, 1))]


@pytest.mark.parametrize("kernel_size,stride,padding,dilation,shape,direct", DIRECT_CASES)
def test_conv2d_matches_oracle_and_gradients(kernel_size, stride, padding, dilation, shape,
                                             direct):
    layer = Conv2D(3, kernel_size, stride=stride, padding=padding, dilation=dilation)
    layer.dtype = np.float64
    rng = np.random.default_rng(1)
    out_shape = layer.build(shape, rng)
    layer.direct = direct  # both code paths, whatever the layer would pick
    layer.bias.value[...] = rng.standard_normal(3)
    x = rng.standard_normal((2, *shape))
    got = layer.forward(x)
    want = conv2d_oracle(x, layer.weight.value, layer.bias.value, layer.stride, layer.pads,
                         layer.dilation, out_shape[1:])
    assert got.shape == (2, *out_shape)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    check_layer(layer, shape, batch=2)


def test_conv2d_same_keeps_size_and_pads_extra_after():
    layer = Conv2D(2, 4, padding="same")
    assert layer.build((1, 6, 5), np.random.default_rng(0)) == (2, 6, 5)
    # span 4 needs 3 zeros: 1 before, 2 after (TensorFlow's convention)
    assert layer.pads == (1, 1)
    strided = Conv2D(2, 3, stride=2, padding="same")
    assert strided.build((1, 7, 8), np.random.default_rng(0)) == (2, 4, 4)


def test_conv2d_without_bias_and_float32():
    rng = np.random.default_rng(2)
    layer = Conv2D(4, 3, padding=1, use_bias=False)
    layer.build((2, 6, 6), rng)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    got = layer.forward(x)
    assert got.dtype == np.float32
    want = conv2d_oracle(x.astype(np.float64), layer.weight.value.astype(np.float64), None,
                         (1, 1), (1, 1), (1, 1), (6, 6))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    grad = layer.backward(np.ones_like(got))
    assert grad.dtype == np.float32 and grad.shape == x.shape
    check_layer(Conv2D(2, 3, padding="same", use_bias=False), (2, 5, 4))


@pytest.mark.parametrize("make,shape", [
    (lambda: Conv2D(3, 5, padding=2), (1, 9, 8)),      # direct kernel
    (lambda: Conv2D(3, 3, stride=2), (4, 9, 8)),       # im2col + GEMM
    (lambda: Conv1D(3, 3, padding="same"), (9, 2)),
])
def test_first_layer_can_skip_the_input_gradient(make, shape):
    rng = np.random.default_rng(9)
    full, first = make(), make()
    for layer in (full, first):
        layer.build(shape, np.random.default_rng(0))
    first.needs_input_grad = False
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    g = rng.standard_normal((2, *full.output_shape)).astype(np.float32)
    full.forward(x)
    first.forward(x)
    assert full.backward(g).shape == x.shape
    assert first.backward(g) is None
    np.testing.assert_array_equal(first.weight.grad, full.weight.grad)
    np.testing.assert_array_equal(first.bias.grad, full.bias.grad)


def test_conv2d_batch_size_can_change_between_calls():
    rng = np.random.default_rng(3)
    layer = Conv2D(2, 3)
    layer.dtype = np.float64
    layer.build((1, 5, 5), rng)
    for n in (4, 1, 4):
        x = rng.standard_normal((n, 1, 5, 5))
        want = conv2d_oracle(x, layer.weight.value, layer.bias.value, (1, 1), (0, 0), (1, 1),
                             (3, 3))
        np.testing.assert_allclose(layer.forward(x), want, atol=1e-12)


CASES_1D = [
    # kernel_size, stride, padding, dilation, input (T, F)
    (3, 1, "valid", 1, (8, 2)),
    (3, 1, "same", 1, (7, 3)),
    (4, 2, "same", 1, (9, 1)),
    (3, 2, 1, 1, (8, 2)),
    (3, 1, 2, 2, (7, 2)),
    (2, 3, "valid", 2, (11, 3)),
    (5, 1, "same", 1, (40, 1)),
]


@pytest.mark.parametrize("kernel_size,stride,padding,dilation,shape", CASES_1D)
def test_conv1d_matches_oracle_and_gradients(kernel_size, stride, padding, dilation, shape):
    layer = Conv1D(4, kernel_size, stride=stride, padding=padding, dilation=dilation)
    layer.dtype = np.float64
    rng = np.random.default_rng(4)
    out_shape = layer.build(shape, rng)
    layer.bias.value[...] = rng.standard_normal(4)
    x = rng.standard_normal((3, *shape))
    got = layer.forward(x)
    want = conv1d_oracle(x, layer.weight.value, layer.bias.value, stride, layer.pad, dilation,
                         out_shape[0])
    assert got.shape == (3, *out_shape)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    check_layer(layer, shape, batch=3)


def test_conv1d_weight_layout_is_keras():
    layer = Conv1D(5, 3)
    layer.build((10, 2), np.random.default_rng(0))
    assert layer.weight.value.shape == (3, 2, 5)
    assert layer.output_shape == (8, 5)


def test_im2col2d_matches_oracle_and_col2im_is_its_adjoint():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 7))
    geometry = ((3, 2), (2, 1), (1, 2), (3, 5))  # kernel, stride, dilation, output
    shape = kernels.conv.padded_shape2d(x.shape, (3, 2), (2, 1), (1, 0), (1, 2), (3, 5))
    assert shape == (2, 3, 7, 7)
    xp = kernels.conv.pad2d(x, (1, 0), np.zeros(shape))
    np.testing.assert_array_equal(kernels.conv.crop2d(xp, (1, 0), x.shape), x)
    cols = kernels.conv.im2col2d(xp, *geometry)
    # oracle: the column of output (n, y, z) lists the taps of its receptive field
    want = np.zeros((3 * 3 * 2, 2 * 3 * 5))
    for n, y, z in itertools.product(range(2), range(3), range(5)):
        for c, i, j in itertools.product(range(3), range(3), range(2)):
            iy, ix = y * 2 + i - 1, z + j * 2
            if 0 <= iy < 6 and 0 <= ix < 7:
                want[(c * 3 + i) * 2 + j, (n * 3 + y) * 5 + z] = x[n, c, iy, ix]
    np.testing.assert_array_equal(cols, want)
    c = rng.standard_normal(cols.shape)
    back = kernels.conv.col2im2d(c, shape, *geometry)
    assert np.isclose(np.sum(cols * c), np.sum(xp * back))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_kernel_matches_oracle(dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, 7, 6)).astype(dtype)
    w = rng.standard_normal((4, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    shape = kernels.conv.padded_shape2d(x.shape, (3, 2), (1, 1), (2, 1), (2, 1), (7, 6))
    xp = kernels.conv.pad2d(x, (2, 1), np.zeros(shape, dtype))
    got = kernels.conv.conv2d_direct(xp, w, b, (2, 1), (7, 6))
    want = conv2d_oracle(x, w, b, (1, 1), (2, 1), (2, 1), (7, 6))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    dw, db = np.empty_like(w), np.empty_like(b)
    g = rng.standard_normal(got.shape).astype(dtype)
    assert kernels.conv.conv2d_direct_backward(g, xp, w, (2, 1), dw, db,
                                               input_grad=False) is None
    np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_im2col1d_rows_are_padded_windows_and_col2im_is_its_adjoint():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 7, 3)).astype(np.float32)
    cols = kernels.conv.im2col1d(x, 3, 2, 1, 1, 4)
    padded = np.concatenate([np.zeros((2, 1, 3), np.float32), x, np.zeros((2, 1, 3), np.float32)],
                            axis=1)
    want = np.stack([padded[:, 2 * t:2 * t + 3].reshape(2, -1) for t in range(4)], axis=1)
    np.testing.assert_array_equal(cols, want.reshape(8, 9))
    c = rng.standard_normal(cols.shape).astype(np.float32)
    back = kernels.conv.col2im1d(c, x.shape, 3, 2, 1, 1, 4)
    assert np.isclose(np.sum(cols * c), np.sum(x * back), rtol=1e-5)


def test_kernel_wrappers_reject_bad_arrays():
    with pytest.raises(DataError, match="rank 4"):
        kernels.conv.im2col2d(np.zeros((2, 3, 4)), (1, 1), (1, 1), (1, 1), (3, 4))
    with pytest.raises(DataError, match="too small"):
        kernels.conv.im2col2d(np.zeros((1, 2, 3, 4)), (2, 2), (1, 1), (1, 1), (3, 3))
    with pytest.raises(DataError, match="float32 or float64"):
        kernels.conv.im2col1d(np.zeros((2, 3, 4), np.int64), 1, 1, 0, 1, 3)
    with pytest.raises(DataError, match="C-contiguous"):
        kernels.conv.im2col1d(np.zeros((2, 4, 3)).transpose(0, 2, 1), 1, 1, 0, 1, 3)
    with pytest.raises(DataError, match="out must be"):
        kernels.conv.im2col1d(np.zeros((2, 3, 4)), 1, 1, 0, 1, 3, out=np.zeros((5, 4)))


@pytest.mark.parametrize("kwargs,match", [
    ({"filters": 0, "kernel_size": 3}, "filters must be a positive integer; received filters=0"),
    ({"filters": 2, "kernel_size": 0}, "kernel_size must be a positive integer"),
    ({"filters": 2, "kernel_size": (3, 3, 3)}, "kernel_size must be"),
    ({"filters": 2, "kernel_size": 3, "stride": 0}, "stride must be"),
    ({"filters": 2, "kernel_size": 3, "padding": "full"}, 'padding must be "valid" or "same"'),
    ({"filters": 2, "kernel_size": 3, "padding": -1}, "padding must be an integer >= 0"),
    ({"filters": 2, "kernel_size": 3, "dilation": 1.5}, "dilation must be"),
    ({"filters": 2, "kernel_size": 3, "use_bias": "yes"}, "use_bias must be True or False"),
    ({"filters": 2, "kernel_size": 3, "kernel_initializer": "twos"}, "kernel_initializer"),
    ({"filters": True, "kernel_size": 3}, "filters must be"),
])
def test_arguments_are_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        Conv2D(**kwargs)
    assert str(info.value).startswith("Conv2D:")


def test_kernel_larger_than_padded_input_names_layer_and_axis():
    layer = Conv2D(4, (3, 5), padding=1)
    with pytest.raises(ConfigError) as info:
        layer.build((1, 8, 2), np.random.default_rng(0))
    msg = str(info.value)
    assert msg.startswith("Conv2D:") and "width" in msg and "at least 3" in msg \
        and "received 2" in msg
    with pytest.raises(ConfigError, match="Conv1D: the kernel span 7 along length"):
        Conv1D(2, 4, dilation=2).build((6, 1), np.random.default_rng(0))


def test_input_shapes_are_checked():
    with pytest.raises(ConfigError, match=r"Conv2D expects inputs of shape \(channels, height"):
        Conv2D(2, 3).build((8, 8), np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"Conv1D expects inputs of shape \(steps, features\)"):
        Conv1D(2, 3).build((1, 8, 8), np.random.default_rng(0))
    layer = Conv1D(2, 3)
    layer.build((8, 2), np.random.default_rng(0))
    with pytest.raises(DataError, match=r"expects input of shape \(batch, 8, 2\)"):
        layer.forward(np.zeros((4, 8, 3), np.float32))


def test_geometry_formulas():
    # (pad_before, output) for size, kernel, stride, dilation, padding
    assert conv_geometry("L", "x", 28, 5, 1, 1, 2) == (2, 28)
    assert conv_geometry("L", "x", 14, 5, 1, 1, "valid") == (0, 10)
    assert conv_geometry("L", "x", 7, 3, 2, 1, "same") == (1, 4)
    assert conv_geometry("L", "x", 10, 3, 1, 3, "same") == (3, 10)
    assert conv_geometry("L", "x", 9, 3, 2, 2, 0) == (0, 3)


def test_config_round_trips():
    layer = Conv2D(8, (3, 1), stride=2, padding="same", dilation=(1, 2), use_bias=False)
    again = Conv2D(**layer.get_config())
    assert again.get_config() == layer.get_config()
    one = Conv1D(8, 5, padding=2)
    assert Conv1D(**one.get_config()).get_config() == one.get_config()
    assert repr(one) == "Conv1D(filters=8, kernel_size=5, padding=2)"
    assert repr(Conv2D(6, (5, 5), padding=(2, 2))) == "Conv2D(filters=6, kernel_size=5, padding=2)"
    assert Conv2D(4, (3, 1)).get_config()["kernel_size"] == (3, 1)


# -- the cnn architecture plugin -------------------------------------------------------------
def _cnn():
    from zoo.plugins import get_host

    return get_host().architectures.get("cnn")


def _built(spec, **options):
    arch = _cnn()
    model = arch.build(spec, arch.resolve_options(options))
    model.build(spec.input_shape, np.random.default_rng(0))
    return model


def test_cnn_adapts_to_the_kind_of_data():
    from zoo.data.spec import DataSpec

    vector = _built(DataSpec((40,), "vector", "classify", 10, 10))
    names = [type(layer).__name__ for layer in vector.layers]
    assert names[:2] == ["Reshape", "Conv1D"] and "Conv2D" not in names
    assert vector.layers[1].input_shape == (40, 1)
    sequence = _built(DataSpec((6, 2), "sequence", "regress", 2))
    assert type(sequence.layers[0]).__name__ == "Conv1D"
    image = _built(DataSpec((1, 8, 8), "image", "classify", 10, 10))
    assert type(image.layers[0]).__name__ == "Conv2D"
    for model, shape in ((vector, (40,)), (sequence, (6, 2)), (image, (1, 8, 8))):
        x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
        assert model.forward(x, training=True).shape == (3, model.output_shape[0])


def test_lenet5_preset_is_the_classic_network():
    from zoo.data.spec import DataSpec

    model = _built(DataSpec((1, 28, 28), "image", "classify", 10, 10), preset="lenet5")
    assert model.num_params == 61_706  # LeCun et al. 1998's count for 28x28 inputs
    assert [layer.output_shape for layer in model.layers if layer.num_params] == [
        (6, 28, 28), (16, 10, 10), (120,), (84,), (10,)]
    # small inputs get padding instead of an error
    small = _built(DataSpec((1, 8, 8), "image", "classify", 10, 10), preset="lenet5")
    assert small.output_shape == (10,)


@pytest.mark.parametrize("options", [
    {}, {"preset": "lenet5"},
    {"batch_norm": False, "pooling": "avg", "global_pool": True, "dropout": 0.2, "depth": 2,
     "activation": "tanh", "hidden": ""},
])
def test_cnn_passes_the_conformance_kit(options):
    from zoo.testing import check_architecture

    done = check_architecture("cnn", options=options)
    assert "image/classify: gradients" in done and "vector/classify: training" in done


@pytest.mark.parametrize("options,match", [
    ({"depth": 0}, "option depth must be a positive integer"),
    ({"channels": ""}, "option channels must be one or more positive integers"),
    ({"channels": "16,0"}, "option channels"),
    ({"dropout": 1.0}, r"option dropout must be in \[0, 1\)"),
    ({"kernel_size": -1}, "option kernel_size"),
    ({"pooling": "min"}, "option pooling must be one of max, avg, none"),
])
def test_cnn_options_are_validated(options, match):
    from zoo.data.spec import DataSpec

    with pytest.raises(ConfigError, match=match):
        arch = _cnn()
        arch.build(DataSpec((8,), "vector", "classify", 3, 3), arch.resolve_options(options))


def test_cnn_plugin_imports_no_numerics():
    import subprocess
    import sys

    code = ("import sys, zoo_plugins.cnn; "
            "print(sorted(m for m in ('numba', 'zoo.layers.conv', 'zoo.kernels.conv') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cnn_learns_digits_in_a_few_epochs():
    from zoo.run import RunConfig, train

    result = train(RunConfig(arch="cnn", dataset="digits", epochs=4, seed=0))
    assert result.test["accuracy"] > 0.9
    assert result.arch == "cnn" and result.epochs == 4
