"""Integer arrays as pydantic fields: numpy arrays in Python, nested lists of ints on the wire.

A configuration's weights are about 10^5 integers. Validated as ``list[list[...[int]]]``,
pydantic builds and checks one Python object per integer (and the garbage collector walks the
lists) and every later reader converts them to an array again. Here an array field validates
nested lists or arrays into one read-only numpy array, and serializes to the same nested lists
of ints, byte for byte; its JSON schema is the nested list's, so the wire contract does not
change. For whole documents, :func:`lift_arrays` and :func:`insert_arrays` go further: they
parse the arrays out of the JSON text, and write them into it, without any Python list.

Arrays are stored read-only: configurations derived from one another (``apply_patch``) share
them, so an in-place write would change every one of them.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from math import prod
from typing import Annotated, Any

import numpy as np
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

#: Validation-context key under which :func:`lift_arrays` hands over the arrays it parsed.
LIFTED = "specklab.lifted_arrays"
#: Serialization-context key under which :func:`defer_arrays` collects the arrays to write.
DEFERRED = "specklab.deferred_arrays"
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
# The kinds of character in a lifted array's text (the lifting pattern admits no others).
_DIGIT, _MINUS, _COMMA, _OPEN, _CLOSE = range(5)
_KINDS = 5
_KIND_OF_BYTE = np.zeros(256, dtype=np.uint8)  # digits: the rest never reach it
_KIND_OF_BYTE[list(b"-,[]")] = (_MINUS, _COMMA, _OPEN, _CLOSE)
#: Which character may follow which, indexed ``first * _KINDS + second``.
_PAIR_ALLOWED = np.zeros(_KINDS * _KINDS, dtype=bool)
for _first, _second in (
    (_DIGIT, _DIGIT), (_DIGIT, _COMMA), (_DIGIT, _CLOSE),
    (_MINUS, _DIGIT),
    (_COMMA, _DIGIT), (_COMMA, _MINUS), (_COMMA, _OPEN),
    (_OPEN, _OPEN), (_OPEN, _DIGIT), (_OPEN, _MINUS),
    (_CLOSE, _CLOSE), (_CLOSE, _COMMA),
):  # fmt: skip
    _PAIR_ALLOWED[_first * _KINDS + _second] = True


@dataclass(frozen=True)
class IntArraySchema:
    """The pydantic schema of an ``ndim``-dimensional array of ``dtype`` integers."""

    ndim: int
    dtype: type[np.signedinteger]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            self._validate_field,
            # No return schema: a deferred array's placeholder string must pass (see
            # defer_arrays); the JSON schema comes from __get_pydantic_json_schema__.
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize, info_arg=True
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The nested list's, for validation and serialization alike."""
        nested: core_schema.CoreSchema = core_schema.int_schema()
        for _ in range(self.ndim):
            nested = core_schema.list_schema(nested)
        return handler(nested)

    def _validate_field(self, value: object, info: ValidationInfo) -> np.ndarray:
        lifted = (info.context or {}).get(LIFTED)
        if lifted is not None and isinstance(value, str) and value.startswith(lifted[0]):
            return self.validate(lifted[1][int(value[len(lifted[0]) :])])
        return self.validate(value)

    def validate(self, value: object) -> np.ndarray:
        """``value`` (nested lists or an array of integers) as a read-only array, or ValueError."""
        try:
            array = np.asarray(value)
        except ValueError:  # ragged nesting
            raise ValueError(f"must be a {self.ndim}-d nested list of integers") from None
        if array.size == 0:
            # An empty list has no depth to check; keep the declared rank for the shape checks.
            array = np.zeros((0,) * self.ndim, dtype=self.dtype)
        if array.ndim != self.ndim:
            raise ValueError(f"must be a {self.ndim}-d nested list of integers")
        if array.dtype.kind == "f":  # integral floats are accepted, as pydantic's int accepts them
            if not np.array_equal(array, np.trunc(array)):
                raise ValueError("must hold integers, got fractional values")
        elif array.dtype.kind not in "iub":  # booleans too, as pydantic's int takes them
            raise ValueError(f"must hold integers, got {array.dtype.name} values")
        limits = np.iinfo(self.dtype)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise ValueError(f"entries must lie in [{limits.min}, {limits.max}]")
        result = np.array(array, dtype=self.dtype)  # a copy: the caller's array stays theirs
        result.flags.writeable = False
        return result


def lift_arrays(document: bytes, keys: tuple[str, ...]) -> tuple[bytes, dict[str, Any]]:
    """Parse the integer arrays under ``keys`` out of a JSON ``document`` straight into numpy.

    Returns the document with each such array replaced by a placeholder string and the
    validation context that resolves the placeholders (see ``IntArraySchema``). Arrays in any
    other form than compact JSON of a regular nested list of integers (whitespace, empty
    lists, ragged nesting, floats, ...) are left in place for the ordinary validation, which
    then accepts or rejects them as usual: this only skips building Python lists.
    """
    prefix = f"lifted-array-{secrets.token_hex(8)}:"  # unguessable: no input can name one
    arrays: list[np.ndarray] = []
    pattern = re.compile(rb'"(?:' + b"|".join(k.encode() for k in keys) + rb')":(\[[-0-9,\[\]]*\])')

    def lift(match: re.Match[bytes]) -> bytes:
        array = _parse_compact(match.group(1))
        if array is None:
            return match.group(0)
        arrays.append(array)
        head = match.group(0)[: match.start(1) - match.start(0)]
        return head + f'"{prefix}{len(arrays) - 1}"'.encode()

    return pattern.sub(lift, document), {LIFTED: (prefix, arrays)}


def _parse_compact(text: bytes) -> np.ndarray | None:
    """A compact JSON nested list of integers as an int64 array; None for anything else."""
    kinds = _KIND_OF_BYTE[np.frombuffer(text, dtype=np.uint8)]
    # Each pair of neighbouring characters must be one JSON's integer lists allow: this
    # rules out empty lists and elements, stray minus signs, digits after a bracket, ...
    if (
        kinds.size < 3
        or kinds[0] != _OPEN
        or not _PAIR_ALLOWED[kinds[:-1] * _KINDS + kinds[1:]].all()
    ):
        return None
    zeros = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("0"))
    # a leading zero: a 0 that starts a number (after [ , or -) and is followed by a digit
    if zeros.size and np.any((kinds[zeros - 1] != _DIGIT) & (kinds[zeros + 1] == _DIGIT)):
        return None
    shape = _regular_shape(text.translate(None, b"-0123456789"))
    if shape is None:
        return None
    # Numbers beyond int64 saturate, which is outside every field's range: refused there.
    values = np.fromstring(text.translate(_BRACKETS_TO_SPACES), dtype=np.int64, sep=",")
    if values.size != prod(shape):
        return None
    return values.reshape(shape)


def _regular_shape(skeleton: bytes) -> tuple[int, ...] | None:
    """The shape of a nested list from its brackets and commas, if it is regular."""
    ndim = len(skeleton) - len(skeleton.lstrip(b"["))
    # The first list at depth k closes at the first run of ndim - k closing brackets.
    ends = [skeleton.find(b"]" * (ndim - k)) for k in range(ndim)]
    if min(ends, default=-1) < 0:
        return None
    lengths = [end + ndim - 2 * k for k, end in enumerate(ends)]
    shape: list[int] = []
    child = 0
    for length in reversed(lengths):
        count, rest = divmod(length - 1, child + 1)
        if rest or count < 1:
            return None
        shape.insert(0, count)
        child = length
    expected = b""
    for count in reversed(shape):
        expected = b"[" + b",".join([expected] * count) + b"]"
    return tuple(shape) if expected == skeleton else None


def _serialize(value: object, info: core_schema.SerializationInfo) -> object:
    """An array as nested lists of Python ints (anything else, e.g. a list, unchanged), or
    as a placeholder when :func:`defer_arrays` writes the arrays itself."""
    if not isinstance(value, np.ndarray):
        return value
    deferred = (info.context or {}).get(DEFERRED)
    if deferred is not None and info.mode_is_json():
        deferred[1].append(value)
        return f"{deferred[0]}{len(deferred[1]) - 1}"
    return value.tolist()


def defer_arrays() -> dict[str, Any]:
    """A serialization context under which arrays are written as placeholders, for
    :func:`insert_arrays` to replace with their compact JSON."""
    return {DEFERRED: (f"deferred-array-{secrets.token_hex(8)}:", [])}


def insert_arrays(document: str, context: dict[str, Any]) -> str:
    """``document`` (compact JSON) with the placeholders of ``context`` replaced by their arrays.

    Writing the JSON text from the array skips building nested Python lists, which the
    garbage collector then walks: ten times the cost of the text for 10^5 weights.
    """
    prefix, arrays = context[DEFERRED]
    placeholder = re.compile(f'"{re.escape(prefix)}([0-9]+)"')
    return placeholder.sub(lambda match: _compact_json(arrays[int(match.group(1))]), document)


def _compact_json(array: np.ndarray) -> str:
    """``array`` as compact JSON, as pydantic writes the nested lists (no spaces)."""
    n = array.size
    if n == 0:
        return str(array.tolist()).replace(" ", "")
    ndim = array.ndim
    # Before element i (i >= 1): "]" * k + "," + "[" * k, k = the trailing axes restarting there.
    index = np.arange(1, n)
    restarts = np.zeros(n - 1, dtype=np.intp)
    for size in np.cumprod(array.shape[::-1])[:-1]:
        restarts += index % size == 0
    separators = ["]" * k + "," + "[" * k for k in range(ndim)]
    parts = [""] * (2 * n + 1)
    parts[0] = "[" * ndim
    parts[1::2] = map(str, array.ravel().tolist())  # ints and strs: nothing for the GC to walk
    parts[2:-1:2] = [separators[k] for k in restarts.tolist()]
    parts[-1] = "]" * ndim
    return "".join(parts)


#: ``[out][in][ky][kx]`` weights (the chip's are int8: the device layer checks that).
WEIGHTS = IntArraySchema(4, np.int16)
#: ``[feature][y][x]`` membrane values (the chip's are int16: likewise).
STATES = IntArraySchema(3, np.int32)
Weights = Annotated[np.ndarray, WEIGHTS]
States = Annotated[np.ndarray, STATES]
