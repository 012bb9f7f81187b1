"""What threads need to share work without the GIL, for numba kernels: atomics, a spin-wait
hint, a clock, and calls through addresses.

``zoo.kernels.workers`` lets threads hand each other work through a small int64 array without
the GIL. numba has no atomics, and a plain load in a waiting loop may be hoisted out of it by
LLVM (the loop would then never see another thread's store), so these are LLVM's own atomic
instructions: ``load`` (acquire), ``store``, ``add`` and ``compare_and_swap``
(sequentially consistent), each on ``array[i]`` of a C-contiguous int64 array.

``pause()`` tells the CPU the thread is spinning (x86 ``pause``, ARM ``yield``; nothing
elsewhere), which spares a hyperthread sibling and the memory bus. ``now_ns`` and
``sleep_ns`` call C's ``clock_gettime`` and ``nanosleep`` through addresses received as
arguments (``clock_functions``), so the kernels stay cacheable across processes;
``call_block`` calls a numba ``cfunc`` by its address and ``pointer`` turns an address into a
pointer for ``numba.carray``.
"""

from __future__ import annotations

import ctypes
import platform
import time

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from zoo.kernels._jit import njit


def _pointer(context, builder, aryty, ary, index):
    array = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, array, [index], wraparound=False)


def _check_int64_array(arr):
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        raise TypeError(f"an atomic needs a 1-D int64 array; received {arr}")


@intrinsic
def load(typingctx, arr, i):
    """``arr[i]``, read atomically (acquire: what was written before a release store of it
    by another thread is visible after)."""
    _check_int64_array(arr)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, i), codegen


@intrinsic
def store(typingctx, arr, i, value):
    """``arr[i] = value`` atomically (sequentially consistent: every earlier write is visible
    first, and no later read moves before it)."""
    _check_int64_array(arr)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, ptr, "seq_cst", 8)
        return context.get_dummy_value()

    return types.void(arr, i, value), codegen


@intrinsic
def add(typingctx, arr, i, value):
    """``arr[i] += value`` atomically; returns the value before."""
    _check_int64_array(arr)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")

    return types.int64(arr, i, value), codegen


@intrinsic
def compare_and_swap(typingctx, arr, i, expected, new):
    """If ``arr[i] == expected`` set it to ``new``, atomically; True if it did."""
    _check_int64_array(arr)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        exp = context.cast(builder, args[2], signature.args[2], types.int64)
        new_ = context.cast(builder, args[3], signature.args[3], types.int64)
        pair = builder.cmpxchg(ptr, exp, new_, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(arr, i, expected, new), codegen


_MACHINE = platform.machine().lower()
# LLVM's own spin-wait hint of the CPU (numba's code generator has no inline assembly).
if _MACHINE in ("x86_64", "amd64", "i686", "x86"):
    _HINT: tuple = ("llvm.x86.sse2.pause", ())
elif _MACHINE in ("aarch64", "arm64"):
    _HINT = ("llvm.aarch64.hint", (1,))  # 1: YIELD
else:
    _HINT = ()


@intrinsic
def pause(typingctx):
    """A spin-wait hint to the CPU (only a memory barrier where none is known)."""
    def codegen(context, builder, signature, args):
        if _HINT:
            name, operands = _HINT
            int_t = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [int_t] * len(operands))
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            builder.call(fn, [ir.Constant(int_t, x) for x in operands])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _call_int_ptr(typingctx, address, first, buffer):
    """``int f(int first, void *buffer)`` at ``address`` (clock_gettime, nanosleep's shape)."""
    def codegen(context, builder, signature, args):
        int_t = ir.IntType(32)
        ptr_t = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(int_t, [int_t, ptr_t])
        aryty = signature.args[2]
        array = context.make_array(aryty)(context, builder, args[2])
        data = builder.bitcast(array.data, ptr_t)
        arg = builder.trunc(args[1], int_t)
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [arg, data])
        return context.get_dummy_value()

    return types.void(address, first, buffer), codegen


@intrinsic
def _call_ptr_ptr(typingctx, address, buffer):
    """``int f(void *buffer, void *null)`` at ``address`` (nanosleep)."""
    def codegen(context, builder, signature, args):
        int_t = ir.IntType(32)
        ptr_t = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(int_t, [ptr_t, ptr_t])
        array = context.make_array(signature.args[1])(context, builder, args[1])
        data = builder.bitcast(array.data, ptr_t)
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                     [data, ir.Constant(ptr_t, None)])
        return context.get_dummy_value()

    return types.void(address, buffer), codegen


def clock_functions() -> np.ndarray:
    """``[clock_gettime, nanosleep, CLOCK_MONOTONIC]`` as int64 (addresses), or zeros where
    the C library has none (no spinning then: waits go straight to sleep)."""
    try:
        libc = ctypes.CDLL(None)
        gettime = ctypes.cast(libc.clock_gettime, ctypes.c_void_p).value
        sleep = ctypes.cast(libc.nanosleep, ctypes.c_void_p).value
        clock = time.CLOCK_MONOTONIC
    except (OSError, AttributeError):
        return np.zeros(3, np.int64)
    if ctypes.sizeof(ctypes.c_long) != 8:  # timespec as two int64s: 64-bit platforms only
        return np.zeros(3, np.int64)
    return np.array([gettime or 0, sleep or 0, clock], np.int64)


@njit
def now_ns(clock, timespec):
    """Monotonic nanoseconds (kernels only): ``clock`` from ``clock_functions``, ``timespec``
    a scratch int64 array of two elements owned by the calling thread."""
    _call_int_ptr(clock[0], clock[2], timespec)
    return timespec[0] * 1_000_000_000 + timespec[1]


@njit
def sleep_ns(clock, timespec, ns):
    """Sleep about ``ns`` nanoseconds (kernels only), without the GIL."""
    timespec[0] = ns // 1_000_000_000
    timespec[1] = ns % 1_000_000_000
    _call_ptr_ptr(clock[1], timespec)


@intrinsic
def pointer(typingctx, address, sample):
    """The address ``address`` (an integer) as a pointer to ``sample``'s type, for
    ``numba.carray`` (kernels only)."""
    target = types.CPointer(sample)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(target))

    return target(address, sample), codegen


@intrinsic
def call_block(typingctx, address, desc, i):
    """Call ``void block(int64 *desc, int64 i)`` at ``address`` (a numba ``cfunc``)."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i64.as_pointer(), i64])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(fn, [builder.inttoptr(args[1], i64.as_pointer()), args[2]])
        return context.get_dummy_value()

    return types.void(address, desc, i), codegen
