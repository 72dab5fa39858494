"""The package's public surface: a complete ``__all__``, and the same API sync and async."""

from __future__ import annotations

import inspect
import types

import specklab.client as client
from specklab.client import (
    AsyncClient,
    AsyncEventStream,
    AsyncHardwareModel,
    Client,
    EventStream,
    HardwareModel,
)


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(client.__all__) == public
    # The schemas' types are re-exported as they are; the client's own names carry docs.
    own = [n for n in client.__all__ if getattr(client, n).__module__.startswith(client.__name__)]
    assert [n for n in own if not getattr(client, n).__doc__] == []


def test_a_user_needs_no_import_from_the_schemas() -> None:
    from specklab.schemas import chipconfig, compile, events, patch

    for module, names in [
        (chipconfig, ["ChipConfig"]),
        (compile, ["CompileOptions", "CompileReport"]),
        (patch, ["ConfigPatch"]),
        (events, ["spikes", "dvs_events", "EventKind"]),
    ]:
        for name in names:
            assert getattr(client, name) is getattr(module, name), name


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_async_classes_offer_the_blocking_ones_api_with_the_same_parameters() -> None:
    pairs = [
        (Client, AsyncClient),
        (EventStream, AsyncEventStream),
        (HardwareModel, AsyncHardwareModel),
    ]
    for blocking, awaiting in pairs:
        sync_methods, async_methods = _methods(blocking), _methods(awaiting)
        renamed = {"close": "aclose"}
        for name, signature in sync_methods.items():
            other = async_methods.get(renamed.get(name, name))
            assert other is not None, f"{awaiting.__name__} lacks {name}"
            # Async code sends in the background with its own task, not a thread.
            wanted = [p for p in signature.parameters if p != "background"]
            assert list(other.parameters) == wanted, name


def test_public_calls_name_their_parameters() -> None:
    # What IDEs and type checkers show: no (*args, **kwargs) but for compile's CompileOptions
    # fields, a job's JobOptions fields and a control message's arguments.
    variadic_allowed = {
        "compile": ["options"],
        "submit_job": ["options"],
        "evaluate": ["options"],
        "control": ["args"],
    }
    classes = [
        Client,
        AsyncClient,
        EventStream,
        AsyncEventStream,
        HardwareModel,
        AsyncHardwareModel,
        client.Booking,
        client.AsyncBooking,
    ]
    for cls in classes:
        for name, signature in _methods(cls).items():
            variadic = [
                p.name
                for p in signature.parameters.values()
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            assert variadic in ([], variadic_allowed.get(name)), f"{cls.__name__}.{name}{signature}"
