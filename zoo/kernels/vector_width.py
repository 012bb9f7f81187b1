"""``wide_vectors()``: let LLVM vectorise the calling kernel's loops with 512-bit vectors.

On AVX-512 CPUs LLVM's loop vectoriser prefers 256-bit vectors (Intel's tuning for every
AVX-512 core: 512-bit instructions used to lower the clock), so a numba loop gets half the
lanes the CPU has. Kernels whose time is arithmetic on the vector units, such as the recurrent
cells' gate maths, run next to ``zoo.kernels.packed``'s 512-bit register tile anyway, so the
clock is already what 512-bit code gets. Calling ``wide_vectors()`` at the top of such a
kernel sets the two LLVM function attributes that allow it: ``prefer-vector-width`` (what the
vectoriser picks) and ``min-legal-vector-width`` (what the code generator keeps whole instead
of splitting in halves).

The results do not change: every lane computes the same operations in the same order, the
vectoriser only processes more elements at a time. (Only for loops without a sum over their
own index: fast-math lets the vectoriser regroup such a sum by its width. The kernels that call
this have none.) Where the CPU has no 512-bit vectors the attributes have no effect.

llvmlite validates function attributes against a fixed list of keywords that has no
string-valued ones, so they are added to its attribute set directly; if a later llvmlite
stores them differently, kernels compile without them (narrower vectors, same results).
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

WIDTH_BITS = 512
_ATTRIBUTES = (f'"prefer-vector-width"="{WIDTH_BITS}"',
               f'"min-legal-vector-width"="{WIDTH_BITS}"')


@intrinsic
def wide_vectors(typingctx):
    """In a numba kernel: vectorise its loops with up to 512-bit vectors (see above)."""

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        try:
            for attribute in _ATTRIBUTES:
                set.add(attributes, attribute)
        except TypeError:  # not a set any more: keep the default width
            pass
        return context.get_dummy_value()

    return types.void(), codegen
