"""zoo.kernels.aligned: arrays on cache lines, otherwise like numpy's."""

import numpy as np
import pytest

from zoo.kernels import aligned
from zoo.layers.recurrent import GRU, LSTM, SimpleRNN


@pytest.mark.parametrize("shape", [(3, 5), (0,), 7, (2, 3, 129), ()])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_arrays_start_on_a_cache_line_and_behave_like_numpys(shape, dtype):
    for _ in range(20):  # numpy's own start moves between allocations; ours must not
        a = aligned.empty(shape, dtype)
        assert a.size == 0 or a.ctypes.data % aligned.LINE == 0  # no data: nothing to align
        assert a.shape == np.empty(shape).shape and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
    z = aligned.zeros(shape, dtype)
    assert (z.size == 0 or z.ctypes.data % aligned.LINE == 0) and not z.any()


def test_arrays_and_kept_arrays_can_start_on_a_page():
    for _ in range(20):
        a = aligned.empty((3, 1000), np.float32, aligned.PAGE)
        assert a.ctypes.data % aligned.PAGE == 0 and a.shape == (3, 1000)
    kept = aligned.kept("test page", (2, 1024), np.float32, aligned.PAGE)
    assert kept.ctypes.data % aligned.PAGE == 0
    # the boundary is part of what names a kept array
    assert aligned.kept("test page", (2, 1024), np.float32) is not kept


def test_a_copy_is_equal_aligned_and_independent():
    src = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]  # strided
    out = aligned.copy(src)
    assert out.ctypes.data % aligned.LINE == 0 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, src)
    out[0, 0] = -1
    assert src[0, 0] == 0


@pytest.mark.parametrize("make", [SimpleRNN, LSTM, GRU])
def test_recurrent_layers_keep_their_work_arrays_on_cache_lines(make):
    layer = make(16)
    layer.build((5, 3), np.random.default_rng(0))
    layer.forward(np.ones((4, 5, 3)))
    for name, buf in layer._buf.items():
        assert buf.ctypes.data % aligned.LINE == 0, name


def test_a_kept_array_is_this_threads_own_for_its_name_shape_and_dtype():
    import threading

    first = aligned.kept(("test", 0), (3, 130), np.float32)
    assert first.ctypes.data % aligned.LINE == 0 and first.shape == (3, 130)
    assert aligned.kept(("test", 0), (3, 130), np.float32) is first
    others = [aligned.kept(("test", 1), (3, 130), np.float32),
              aligned.kept(("test", 0), (3, 131), np.float32),
              aligned.kept(("test", 0), (3, 130), np.float64)]
    elsewhere = []
    thread = threading.Thread(
        target=lambda: elsewhere.append(aligned.kept(("test", 0), (3, 130), np.float32)))
    thread.start()
    thread.join()
    for other in others + elsewhere:
        assert not np.shares_memory(other, first)
    # however many shapes a thread meets, it keeps a bounded number of arrays
    for units in range(3 * aligned.MOST_KEPT):
        aligned.kept("test sweep", (2, units + 1), np.float32)
    assert len(aligned._KEPT.arrays) <= aligned.MOST_KEPT


def test_a_recurrent_step_asks_the_system_for_no_memory_once_warm():
    # Large work arrays made on every call (a recurrent-weight gradient's parts, the packed
    # weights) came back from the system each time, page faults and all. Once the layer's
    # buffers are made, a step allocates nothing large: tracemalloc sees numpy's arrays.
    import tracemalloc

    layer = LSTM(128)
    layer.build((40, 1), np.random.default_rng(0), dtype=np.float32)
    x = np.random.default_rng(1).random((64, 40, 1)).astype(np.float32)
    for _ in range(2):
        layer.backward(np.ones_like(layer.forward(x, training=True)))
    tracemalloc.start()
    try:
        layer.backward(np.ones_like(layer.forward(x, training=True)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 128 * 1024, peak  # the 256 KB arrays of each pass are kept, not made
