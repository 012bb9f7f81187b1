"""Denormal floats flushed to zero while zoo computes: the same training, without the slow path.

Training on a batch the model already fits drives softmax probabilities, sigmoid slopes and
the gradients made from them below float32's smallest normal number (1.2e-38). The CPU
handles such denormal operands in microcode, tens of times slower than normal ones, and every
product that touches them slows down: a ``benchmarks/steps.py`` mlp-small step went from
17 us to 51 us once its loss was near zero. XLA (JAX, TensorFlow) flushes denormals for the
same reason; zoo does it inside its own computations only: ``flush_denormals()`` wraps each
training step, evaluation and prediction, and restores the caller's mode on exit, so a
user's own numpy code outside zoo computes as before.

On x86-64 this sets two bits of the SSE/AVX control register MXCSR: FTZ (a denormal result
becomes zero) and DAZ (a denormal operand is read as zero), which numpy, numba's kernels and
the BLAS library all obey. Elsewhere (ARM, ...) the mode is left alone: denormals are computed
as IEEE 754 says, slower on some CPUs, with the same results on any thread count either way.

A value that would have been denormal is below 1.2e-38 (float32) or 2.2e-308 (float64);
flushing it changes a sum by less than one unit in the last place of anything it is added to,
which is why frameworks treat the mode as a speed setting. It does change bits, so the threads
that compute one product must all run in the same mode: ``zoo.kernels.threads.run_blocks``
hands the posting thread's mode to every worker for the blocks it computes (``same_mode``).

The register is per thread; reading and writing it is one instruction each, plus a numba call.
The kernels are made on first use: importing this module loads neither numpy nor numba (the
command line imports the training loop before it knows whether it will train).
"""

from __future__ import annotations

import platform

# MXCSR bits: FTZ (15) flushes denormal results to zero, DAZ (6) reads denormal operands as
# zero. The low six bits are sticky exception flags, which are not part of a mode.
FLUSH_BITS = 0x8040
STATUS_BITS = 0x3F

SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")


def read_csr(builder):
    """LLVM IR reading this thread's MXCSR (an i32), for intrinsics here and in ``workers``."""
    from llvmlite import ir

    slot = builder.alloca(ir.IntType(32))
    _csr_call(builder, "llvm.x86.sse.stmxcsr", slot)
    return builder.load(slot)


def write_csr(builder, value):
    """LLVM IR setting this thread's MXCSR to the i32 ``value``."""
    from llvmlite import ir

    slot = builder.alloca(ir.IntType(32))
    builder.store(value, slot)
    _csr_call(builder, "llvm.x86.sse.ldmxcsr", slot)


def _csr_call(builder, name, slot):
    from llvmlite import ir

    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    fn = builder.module.declare_intrinsic(name, fnty=fnty)
    builder.call(fn, [builder.bitcast(slot, ir.IntType(8).as_pointer())])


def _define_x86_kernel():
    """MXCSR's ``swap`` as a numba kernel; only built on x86-64 (compile what runs)."""
    from numba import types
    from numba.extending import intrinsic

    from zoo.kernels._jit import njit

    @intrinsic
    def stmxcsr(typingctx):
        def codegen(context, builder, signature, args):
            return read_csr(builder)

        return types.uint32(), codegen

    @intrinsic
    def ldmxcsr(typingctx, value):
        def codegen(context, builder, signature, args):
            write_csr(builder, args[0])
            return context.get_dummy_value()

        return types.void(types.uint32), codegen

    @njit
    def swap(keep, add):
        old = stmxcsr()
        new = (old & keep) | add
        if new != old:
            ldmxcsr(new)
        return old

    return swap


_KERNEL: list = []  # [swap] once made


def _swap(keep: int, add: int) -> int:
    """Set MXCSR to ``(old & keep) | add`` (one numba call) and return ``old``."""
    if not _KERNEL:
        _KERNEL.append(_define_x86_kernel())
    return int(_KERNEL[0](keep, add))


def current_mode() -> int:
    """This thread's floating-point mode (0 where zoo does not manage one)."""
    return _swap(0xFFFFFFFF, 0) & ~STATUS_BITS if SUPPORTED else 0


def flushing() -> bool:
    """Whether this thread flushes denormals to zero now."""
    return SUPPORTED and current_mode() & FLUSH_BITS == FLUSH_BITS


class _Mode:
    """Change this thread's mode on entry (``_keep``, ``_add``: see ``_swap``); restore it on
    exit. Exception flags raised inside are kept: they are not part of a mode."""

    __slots__ = ("old",)
    _keep = 0xFFFFFFFF
    _add = 0

    def __enter__(self):
        self.old = _swap(self._keep, self._add) & ~STATUS_BITS if SUPPORTED else None
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            _swap(STATUS_BITS, self.old)
        return False


class flush_denormals(_Mode):  # lower case: used as ``with flush_denormals():``
    """Inside the block, this thread flushes denormals to zero; its mode is restored after."""

    __slots__ = ()
    _add = FLUSH_BITS


class same_mode(_Mode):
    """Inside the block, this thread runs in ``mode`` (another thread's ``current_mode()``)."""

    __slots__ = ("_add",)
    _keep = STATUS_BITS

    def __init__(self, mode: int):
        self._add = mode & ~STATUS_BITS
