"""LLVM-level building blocks for the compiled event loop that numba's Python subset lacks.

``add_block`` is the simulator's innermost step written as one explicit vector operation on
32 int16 membranes, the chip's own 16-bit format. Left to itself, LLVM vectorizes the same
scalar loop behind a runtime alias check, a four-way unrolled body, two epilogues and a
horizontal maximum, which on the 20-500 neuron slices one input event touches costs more
than the additions; and the neurons at threshold then need a second pass to be found. Here
one block is a load, a saturating add, a clamp and a store, and the compare that finds the
firing neurons comes out as a bit mask in the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

#: Neurons one ``add_block`` call updates (one AVX-512 register of int16; two with AVX2).
LANES = 32


@intrinsic
def borrowed(typingctx: Any, array: types.Array) -> tuple[Any, Callable[..., Any]]:
    """The same array without its reference-counted owner, for use inside one call only.

    numba increments and decrements (atomically) the owner's reference count of every array
    handed to an inlined helper; on the per-event path that costs more than the event's
    work. A borrowed view has no owner, so those operations compile away. The caller's
    reference keeps the memory alive for the duration of the call.
    """

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        source = context.make_array(signature.args[0])(context, builder, args[0])
        view = context.make_array(signature.return_type)(context, builder)
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        view.nitems = source.nitems
        view.itemsize = source.itemsize
        view.data = source.data
        view.shape = source.shape
        view.strides = source.strides
        return view._getvalue()

    return array(array), codegen


def _check_vector(name: str, array: types.Type, dtypes: tuple[types.Integer, ...]) -> None:
    if not (
        isinstance(array, types.Array)
        and array.ndim == 1
        and array.layout == "C"
        and array.dtype in dtypes
    ):
        wanted = " or ".join(str(d) for d in dtypes)
        raise TypingError(f"add_block: {name} must be a contiguous 1-d {wanted} array, got {array}")


def _splat(builder: Any, scalar: Any) -> Any:
    """A vector of LANES copies of ``scalar``."""
    vector = ir.VectorType(scalar.type, LANES)
    undefined = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undefined, scalar, ir.Constant(ir.IntType(32), 0))
    everywhere = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
    return builder.shuffle_vector(first, undefined, everywhere)


@intrinsic
def add_block(
    typingctx: Any,
    neurons: types.Array,
    neuron_start: types.Integer,
    inputs: types.Array,
    input_start: types.Integer,
    count: types.Integer,
    low: types.Integer,
    high: types.Integer,
) -> tuple[Any, Callable[..., Any]]:
    """Add ``count`` (1..LANES) inputs to as many neurons; returns the mask of those at ``high``.

    ``neurons[neuron_start + i] = max(neurons[..] + inputs[input_start + i], low)`` for
    i < count, the sum saturating at the int16 limits like the chip's 16-bit membranes, and
    bit i of the result is set when that new value is >= ``high``. Neurons are int16, inputs
    int8 (weights) or int16 (biases); ``low`` and ``high`` must fit in int16.

    Both arrays are read, and ``neurons`` written back, as whole blocks of LANES entries: the
    lanes at and past ``count`` are stored unchanged, so each array needs LANES - 1 entries
    of padding after its last slice, and no other thread may write the neurons meanwhile.
    """
    _check_vector("neurons", neurons, (types.int16,))
    _check_vector("inputs", inputs, (types.int8, types.int16))

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        neurons_v, neuron_start_v, inputs_v, input_start_v, count_v, low_v, high_v = args
        block = ir.VectorType(ir.IntType(16), LANES)

        def load(array_type: types.Array, array: Any, start: Any) -> tuple[Any, Any]:
            data = context.make_array(array_type)(context, builder, array).data
            element = context.get_value_type(array_type.dtype)
            at = builder.bitcast(
                builder.gep(data, [start]), ir.VectorType(element, LANES).as_pointer()
            )
            return at, builder.load(at, align=array_type.dtype.bitwidth // 8)

        def splat16(value: Any, value_type: types.Integer) -> Any:
            return _splat(builder, context.cast(builder, value, value_type, types.int16))

        neuron_block, old = load(signature.args[0], neurons_v, neuron_start_v)
        _, added = load(signature.args[2], inputs_v, input_start_v)
        if added.type != block:
            added = builder.sext(added, block)
        saturating_add = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(block, [block, block]), f"llvm.sadd.sat.v{LANES}i16"
        )
        summed = builder.call(saturating_add, [old, added])
        floor = splat16(low_v, signature.args[5])
        summed = builder.select(builder.icmp_signed("<", summed, floor), floor, summed)
        lane = ir.Constant(ir.VectorType(ir.IntType(32), LANES), list(range(LANES)))
        count32 = context.cast(builder, count_v, signature.args[4], types.int32)
        used = builder.icmp_signed("<", lane, _splat(builder, count32))
        builder.store(builder.select(used, summed, old), neuron_block, align=2)
        at_threshold = builder.icmp_signed(">=", summed, splat16(high_v, signature.args[6]))
        mask = builder.bitcast(builder.and_(at_threshold, used), ir.IntType(LANES))
        return builder.zext(mask, ir.IntType(64))

    signature = types.int64(neurons, neuron_start, inputs, input_start, count, low, high)
    return signature, codegen


@intrinsic
def lowest_bit(typingctx: Any, mask: types.Integer) -> tuple[Any, Callable[..., Any]]:
    """Index of the lowest set bit of a non-zero ``mask``."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return mask(mask), codegen
