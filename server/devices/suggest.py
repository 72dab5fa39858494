"""Closest known device ids for an id nobody has: the guide's short ids find the lab's names.

The vendor's guide says ``speck2fdevkit:0``; a lab of virtual devkits calls it
``virtual-speck2fdevkit:0``. So ids that end with the one asked for, then ids of its type, are
offered; when there are none, its spelling neighbours (difflib), for typos.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .errors import DeviceNotFound

#: Suggestions named in one answer.
MAX_SUGGESTIONS = 3
#: difflib's similarity below which an id is not offered.
_CUTOFF = 0.6


def _type_of(device_id: str) -> str:
    """``virtual-speck2fdevkit:0`` -> ``speck2fdevkit``."""
    return device_id.rsplit(":", 1)[0].rsplit("virtual-", 1)[-1].rsplit("/", 1)[-1]


def closest_ids(wanted: str, known: Iterable[str]) -> list[str]:
    """Up to ``MAX_SUGGESTIONS`` of ``known``, best first."""
    candidates = sorted(set(known))
    by_suffix = [k for k in candidates if k != wanted and k.endswith(wanted)]
    by_type = [k for k in candidates if _type_of(k) == _type_of(wanted)]
    named = list(dict.fromkeys(by_suffix + by_type))
    if not named:  # nothing of that name or type: a typo, perhaps
        named = difflib.get_close_matches(wanted, candidates, n=MAX_SUGGESTIONS, cutoff=_CUTOFF)
    return named[:MAX_SUGGESTIONS]


def did_you_mean(names: list[str]) -> str:
    return f"; did you mean {' or '.join(names)}?" if names else ""


def unknown_device(wanted: str, known: Iterable[str], *, where: str = "") -> DeviceNotFound:
    """The 404 for ``wanted``: the closest of ``known`` in the message and in ``detail``."""
    suggestions = closest_ids(wanted, known)
    return DeviceNotFound(
        f"no device {wanted}{where}{did_you_mean(suggestions)}",
        detail={"device_id": wanted, "suggestions": suggestions},
    )
