from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from specklab.schemas import frames
from specklab.schemas.events import (
    DTYPES,
    DVS_DTYPE,
    SIGNATURES,
    SPIKE_DTYPE,
    EventKind,
    concat_events,
    copy_events,
    dvs_events,
    spikes,
    take_events,
)
from specklab.schemas.frames import (
    ControlFrame,
    EndFrame,
    ErrorFrame,
    EventsFrame,
    FrameError,
    StatsFrame,
    decode,
    encode,
    encode_parts,
)


def event_arrays(kind: EventKind) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(DTYPES[kind], st.integers(0, 300))


@pytest.mark.parametrize("kind", list(EventKind))
def test_event_dtypes_are_packed_little_endian_and_small(kind: EventKind) -> None:
    dtype = DTYPES[kind]
    assert dtype.itemsize <= 16
    assert dtype.itemsize == sum(dtype.fields[n][0].itemsize for n in dtype.names)
    assert dtype.fields["t"][0] == np.dtype("<u8")
    assert not dtype.hasobject


@given(kind=st.sampled_from(list(EventKind)), data=st.data(), seq=st.none() | st.integers(0, 2**40))
def test_events_round_trip(kind: EventKind, data: st.DataObject, seq: int | None) -> None:
    events = data.draw(event_arrays(kind))
    decoded = decode(encode(EventsFrame(kind, events, seq=seq)))
    assert isinstance(decoded, EventsFrame)
    assert decoded.kind is kind and decoded.seq == seq
    assert decoded.events.dtype == DTYPES[kind]
    np.testing.assert_array_equal(decoded.events, events)


def test_decoding_events_does_not_copy_the_payload() -> None:
    data = encode(
        EventsFrame(EventKind.SPIKE, spikes(t=np.arange(1000), layer=0, feature=1, x=2, y=3))
    )
    events = decode(data).events
    assert not events.flags.owndata  # a view over the bytes msgpack handed out


@pytest.mark.parametrize("count", [0, 3, 20_000])
def test_an_events_frame_in_parts_is_its_head_then_a_view_of_its_events(count: int) -> None:
    events = spikes(t=np.arange(count), layer=0, feature=1, x=2, y=3)
    frame = EventsFrame(EventKind.SPIKE, events, seq=4)
    head, payload = encode_parts(frame)
    assert head + bytes(payload) == encode(frame)
    assert np.shares_memory(np.asarray(payload), events) or count == 0


def test_non_contiguous_events_are_encoded_correctly() -> None:
    events = dvs_events(t=np.arange(10), x=np.arange(10), y=1, p=1)[::2]
    np.testing.assert_array_equal(decode(encode(EventsFrame(EventKind.DVS, events))).events, events)


simple_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(
    frame=st.one_of(
        st.builds(
            ControlFrame,
            op=st.text(min_size=1, max_size=20),
            args=st.dictionaries(st.text(max_size=8), simple_values, max_size=4),
        ),
        st.builds(
            ErrorFrame,
            code=st.text(max_size=20),
            message=st.text(max_size=200),
            fatal=st.booleans(),
            detail=simple_values,
        ),
        st.builds(
            StatsFrame,
            counters=st.dictionaries(
                st.text(max_size=10), st.integers(0, 2**62) | st.floats(allow_nan=False), max_size=6
            ),
        ),
        st.builds(
            EndFrame,
            seq=st.none() | st.integers(0, 2**40),
            counts=st.dictionaries(st.text(max_size=8), st.integers(0, 2**40), max_size=3),
        ),
    )
)
def test_other_frames_round_trip(frame: frames.Frame) -> None:
    assert decode(encode(frame)) == frame


def _packed(body: object) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def _events_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "v": 1,
        "type": "events",
        "kind": "spike",
        "dtype": SIGNATURES[EventKind.SPIKE],
        "bin": np.zeros(3, SPIKE_DTYPE).tobytes(),
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


MALFORMED = {
    "not msgpack": (b"\xc1\xc1\xc1", "malformed"),
    "truncated msgpack": (_packed(_events_body())[:-5], "malformed"),
    "trailing bytes": (_packed(_events_body()) + b"\x00", "malformed"),
    "a list, not a map": (_packed([1, "events"]), "malformed"),
    "a bare integer": (_packed(7), "malformed"),
    "empty": (b"", "malformed"),
    "no version": (_packed({"type": "control", "op": "x"}), "unsupported_version"),
    "future version": (_packed({"v": 2, "type": "control", "op": "x"}), "unsupported_version"),
    "version as text": (_packed({"v": "1", "type": "control", "op": "x"}), "unsupported_version"),
    "unknown type": (_packed({"v": 1, "type": "telepathy"}), "unknown_type"),
    "type missing": (_packed({"v": 1}), "unknown_type"),
    "unknown event kind": (_packed(_events_body(kind="gamma")), "bad_dtype"),
    "wrong dtype signature": (_packed(_events_body(dtype="t<u4,x<u2")), "bad_dtype"),
    "dtype of another kind": (_packed(_events_body(dtype=SIGNATURES[EventKind.DVS])), "bad_dtype"),
    "payload not a multiple": (_packed(_events_body(bin=b"\x00" * 29)), "bad_payload"),
    "payload missing": (_packed(_events_body(bin=None)), "malformed"),
    "payload as text": (_packed(_events_body(bin="abc")), "malformed"),
    "seq as text": (_packed(_events_body(seq="1")), "malformed"),
    "seq as bool": (_packed(_events_body(seq=True)), "malformed"),
    "control without op": (_packed({"v": 1, "type": "control"}), "malformed"),
    "control args a list": (
        _packed({"v": 1, "type": "control", "op": "x", "args": [1]}),
        "malformed",
    ),
    "error without message": (_packed({"v": 1, "type": "error", "code": "x"}), "malformed"),
    "stats counter text": (_packed({"v": 1, "type": "stats", "counters": {"a": "b"}}), "malformed"),
    "non-string map key": (_packed({1: 1, "v": 1, "type": "end"}), "malformed"),
    "ext type": (_packed({"v": 1, "type": "control", "op": msgpack.ExtType(5, b"x")}), "malformed"),
    "timestamp ext": (
        b"\x83\xa1v\x01\xa4type\xa7control\xa2op\xd6\xff\x00\x00\x00\x01",
        "malformed",
    ),
}


@pytest.mark.parametrize("data,code", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_one_typed_error(data: bytes, code: str) -> None:
    with pytest.raises(FrameError) as raised:
        decode(data)
    assert raised.value.code == code
    assert raised.value.message


def test_text_messages_are_refused() -> None:
    with pytest.raises(FrameError, match="binary"):
        decode('{"v": 1}')  # type: ignore[arg-type]


def test_oversized_frames_are_refused_before_parsing() -> None:
    data = encode(EventsFrame(EventKind.SPIKE, np.zeros(100, SPIKE_DTYPE)))
    with pytest.raises(FrameError) as raised:
        decode(data, max_bytes=len(data) - 1)
    assert raised.value.code == "too_large"


@pytest.mark.parametrize(
    "events",
    [
        np.zeros(3, dtype=[("t", "<u8"), ("x", "<u2")]),
        np.zeros(3, dtype=SPIKE_DTYPE.newbyteorder(">")),
        np.zeros((2, 2), dtype=SPIKE_DTYPE),
        np.zeros(3, dtype=object),
        [1, 2, 3],
    ],
    ids=["other fields", "big endian", "2-d", "object", "list"],
)
def test_encoding_refuses_wrong_arrays(events: object) -> None:
    with pytest.raises(FrameError):
        encode(EventsFrame(EventKind.SPIKE, events))  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(data)


def test_event_arrays_copy_join_and_reorder_as_numpy_does() -> None:
    rng = np.random.default_rng(3)
    events = spikes(
        t=np.sort(rng.integers(0, 10**6, 500)),
        layer=1,
        feature=rng.integers(0, 9, 500),
        x=rng.integers(0, 28, 500),
        y=rng.integers(0, 28, 500),
    )
    frozen = decode(encode(EventsFrame(EventKind.SPIKE, events))).events  # read-only view
    copied = copy_events(frozen)
    copied["core"] = 4  # writable, and a copy
    assert (frozen["core"] == 0).all() and (copied["core"] == 4).all()
    np.testing.assert_array_equal(copy_events(events[::3]), events[::3])
    np.testing.assert_array_equal(
        concat_events([frozen, events[:7]], SPIKE_DTYPE), np.concatenate([frozen, events[:7]])
    )
    assert concat_events([], DVS_DTYPE).dtype == DVS_DTYPE
    order = rng.permutation(500)
    np.testing.assert_array_equal(take_events(frozen, order), frozen[order])
    inside = np.flatnonzero(frozen["x"] < 10)
    np.testing.assert_array_equal(take_events(frozen, inside), frozen[frozen["x"] < 10])


def _map_of(*entries: tuple[object, object]) -> bytes:
    """A msgpack map of ``entries`` in this order (a key may come twice)."""
    return bytes((0x80 | len(entries),)) + b"".join(_packed(k) + _packed(v) for k, v in entries)


def _large_entries(payload: object = None) -> list[tuple[object, object]]:
    if payload is None:
        events = np.zeros(frames.VIEW_PAYLOAD_BYTES // SPIKE_DTYPE.itemsize + 7, SPIKE_DTYPE)
        events["t"] = np.arange(len(events))
        payload = events.tobytes()
    return [*_events_body(bin=None).items(), ("seq", 3), ("bin", payload)]


#: Messages large enough for ``decode`` to take their payload as a view of the message.
LARGE_MESSAGES = {
    "as encoded": _map_of(*_large_entries()),
    "payload first": _map_of(*reversed(_large_entries())),
    "payload twice, the last empty": _map_of(*_large_entries(), ("bin", b"")),
    "payload twice, the first empty": _map_of(("bin", b""), *_large_entries()),
    "trailing bytes": _map_of(*_large_entries()) + b"\x00",
    "truncated": _map_of(*_large_entries())[:-9],
    "payload as text": _map_of(*_large_entries("x" * frames.VIEW_PAYLOAD_BYTES)),
    "payload not a multiple": _map_of(*_large_entries(b"\x00" * (frames.VIEW_PAYLOAD_BYTES + 1))),
    "non-string key": _map_of((1, 2), *_large_entries()),
    "ext value": _map_of(("x", msgpack.ExtType(5, b"x")), *_large_entries()),
    "bin key inside a value": _map_of(("args", {"bin": b"\x00" * 70_000}), *_large_entries()),
    "no payload": _packed({"v": 1, "type": "control", "op": "x", "args": {"a": "b" * 70_000}}),
}


def _outcome(data: bytes | bytearray) -> object:
    try:
        frame = decode(data)
    except FrameError as exc:
        return exc.code
    if isinstance(frame, EventsFrame):
        return frame.kind, frame.seq, frame.events.tobytes()
    return frame


@pytest.mark.parametrize("data", LARGE_MESSAGES.values(), ids=LARGE_MESSAGES.keys())
def test_large_messages_decode_as_msgpack_reads_them_whole(data: bytes) -> None:
    # A bytearray (mutable) is unpacked whole by msgpack; bytes take the payload as a view.
    assert len(data) >= frames.VIEW_PAYLOAD_BYTES
    assert _outcome(data) == _outcome(bytearray(data))


def test_a_large_payload_is_a_view_of_the_message() -> None:
    data = LARGE_MESSAGES["as encoded"]
    events = decode(data).events
    assert not events.flags.writeable
    assert np.shares_memory(events, np.frombuffer(data, np.uint8))
