"""The booking rules as tables of cases: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from specklab.schemas.booking import BookingStatus
from specklab.server.booking.rules import (
    BookingRuleError,
    Window,
    booking_status,
    check_quota,
    check_window,
    earliest_slot,
    end_reason,
    free_until,
    held_window,
    idle_deadline,
    idle_reason,
    next_free,
)

T0 = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def w(start: float, end: float) -> Window:
    return Window(at(start), at(end))


M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("busy", "after", "length", "expected"),
    [
        ([], 0, 30, 0),
        ([w(0, 60)], 0, 30, 60),
        ([w(30, 60)], 0, 30, 0),  # fits exactly before: half-open windows
        ([w(29, 60)], 0, 30, 60),
        ([w(0, 10), w(20, 40), w(45, 90)], 0, 10, 10),
        ([w(0, 10), w(20, 40), w(45, 90)], 0, 11, 90),
        ([w(20, 40), w(0, 10)], 5, 5, 10),  # unsorted input
        ([w(0, 120)], 200, 30, 200),  # past bookings do not matter
        ([w(0, 60), w(60, 120)], 0, 1, 120),  # back to back
    ],
)
def test_next_free(busy: list[Window], after: float, length: float, expected: float) -> None:
    assert next_free(busy, after=at(after), length=length * M) == at(expected)


@pytest.mark.parametrize(
    ("busy", "after", "expected"),
    [
        ([], 0, None),
        ([w(30, 60), w(90, 100)], 10, 30),
        ([w(0, 60)], 10, None),
        ([w(60, 90)], 60, 60),
    ],
)
def test_free_until(busy: list[Window], after: float, expected: float | None) -> None:
    assert free_until(busy, after=at(after)) == (None if expected is None else at(expected))


@pytest.mark.parametrize(
    ("busy", "expected"),
    [
        ({"b": [], "a": []}, ("a", 0)),
        ({"a": [w(0, 60)], "b": [w(0, 30)]}, ("b", 30)),
        ({"a": [w(0, 60)], "b": [w(10, 70)]}, ("a", 60)),  # 10 free minutes on b are too few
    ],
)
def test_earliest_slot(busy: dict[str, list[Window]], expected: tuple[str, float]) -> None:
    device, start = earliest_slot(busy, after=at(0), length=30 * M)
    assert (device, start) == (expected[0], at(expected[1]))


def test_earliest_slot_needs_a_candidate() -> None:
    with pytest.raises(ValueError, match="no candidate"):
        earliest_slot({}, after=at(0), length=M)


@pytest.mark.parametrize(
    ("state", "window", "now", "expected"),
    [
        ("active", w(10, 20), 0, BookingStatus.UPCOMING),
        ("active", w(10, 20), 10, BookingStatus.RUNNING),
        ("active", w(10, 20), 19.9, BookingStatus.RUNNING),
        ("active", w(10, 20), 20, BookingStatus.FINISHED),
        ("cancelled", w(10, 20), 0, BookingStatus.CANCELLED),
        ("released", w(10, 20), 15, BookingStatus.RELEASED),
        ("preempted", w(10, 20), 15, BookingStatus.PREEMPTED),
        ("expired", w(10, 20), 30, BookingStatus.EXPIRED),
    ],
)
def test_booking_status(state: str, window: Window, now: float, expected: BookingStatus) -> None:
    assert booking_status(state, window, at(now)) is expected


@pytest.mark.parametrize(
    ("window", "now", "max_minutes", "code"),
    [
        (w(0, 60), 0, 60, None),
        (w(0, 61), 0, 60, "booking_too_long"),
        (w(-10, 0), 0, 60, "invalid_window"),
        (w(-10, 5), 0, 60, None),  # running already: only the end must be ahead
    ],
)
def test_check_window(window: Window, now: float, max_minutes: int, code: str | None) -> None:
    if code is None:
        check_window(window, now=at(now), max_length=max_minutes * M)
    else:
        with pytest.raises(BookingRuleError) as caught:
            check_window(window, now=at(now), max_length=max_minutes * M)
        assert caught.value.code == code


MIDNIGHT = (datetime(2030, 1, 2, tzinfo=UTC) - T0).total_seconds() / 60  # minutes to 2 Jan 00:00


@pytest.mark.parametrize(
    ("existing", "new", "quota", "ok"),
    [
        ([], w(0, 60), 60, True),
        ([], w(0, 61), 60, False),
        ([w(0, 30)], w(40, 70), 60, True),
        ([w(0, 30)], w(40, 71), 60, False),
        # A window across midnight counts on both days.
        ([w(MIDNIGHT - 30, MIDNIGHT + 30)], w(MIDNIGHT + 100, MIDNIGHT + 130), 60, True),
        ([w(MIDNIGHT - 30, MIDNIGHT + 30)], w(MIDNIGHT + 100, MIDNIGHT + 131), 60, False),
        ([w(MIDNIGHT - 60, MIDNIGHT)], w(MIDNIGHT, MIDNIGHT + 60), 60, True),
        # Another day's bookings do not count.
        ([w(0, 60)], w(MIDNIGHT + 10, MIDNIGHT + 70), 60, True),
    ],
)
def test_check_quota(existing: list[Window], new: Window, quota: int, ok: bool) -> None:
    if ok:
        check_quota(existing, new, per_day=quota * M)
    else:
        with pytest.raises(BookingRuleError) as caught:
            check_quota(existing, new, per_day=quota * M)
        assert caught.value.code == "quota_exceeded"
        assert caught.value.detail["quota_minutes"] == quota


@pytest.mark.parametrize(
    ("starts", "ends", "ended", "expected"),
    [(0, 60, None, w(0, 60)), (0, 60, 20, w(0, 20)), (10, 60, 5, None), (0, 60, 90, w(0, 60))],
)
def test_held_window(
    starts: float, ends: float, ended: float | None, expected: Window | None
) -> None:
    assert held_window(at(starts), at(ends), None if ended is None else at(ended)) == expected


@pytest.mark.parametrize(
    ("used", "expected"),
    # Never used: idle from the start; used (a heartbeat counts) before its start: from the start.
    [(None, 30), (10, 40), (-5, 30), (29, 59)],
)
def test_a_booking_is_idle_the_configured_time_after_its_last_use(
    used: float | None, expected: float
) -> None:
    deadline = idle_deadline(
        starts_at=at(0), last_used_at=None if used is None else at(used), idle=30 * M
    )
    assert deadline == at(expected)


@pytest.mark.parametrize(
    ("state", "actor", "reason", "expected"),
    [
        ("preempted", "root", "maintenance", "preempted by root: maintenance"),
        ("preempted", "root", "", "preempted by root"),
        ("released", "alice", "", "released by its holder"),
        ("released", "root", "", "released by root"),
        ("cancelled", "alice", "", "cancelled by its holder"),
    ],
)
def test_every_early_end_says_who_and_why(
    state: str, actor: str, reason: str, expected: str
) -> None:
    assert end_reason(state, actor_name=actor, owner_name="alice", reason=reason) == expected


@pytest.mark.parametrize(("idle", "expected"), [(30 * M, "30"), (1.5 * M, "1.5"), (90 * M, "90")])
def test_the_idle_reason_names_the_idle_time(idle: timedelta, expected: str) -> None:
    assert idle_reason(idle) == f"idle for {expected} minutes"
