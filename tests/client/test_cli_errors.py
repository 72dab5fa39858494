"""Errors for people: one sentence naming the flag or variable to change, an exit status per
kind of failure, and the daemon's ErrorBody with ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from specklab.client import BookingConflict, TransportError, WaitTimeout
from specklab.client._cli.failures import SENTENCES, Exit, exit_status, sentence
from specklab.client._errors import api_error
from specklab.client.cli import main
from specklab.schemas.api import ErrorBody
from specklab.schemas.booking import BookingCreate

from .conftest import Account, new_account
from .test_cli import run

#: Nothing a person should ever read from the command line.
NOISE = ("Traceback", "invalid literal", "/v1/", "errors.pydantic.dev", "usage:", "Bearer")

#: An address where no daemon listens: commands that fail before sending never notice.
NOWHERE = ("--url", "http://127.0.0.1:9", "--token", "spk_x")


def failed(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit status and stderr of a command that fails (usage errors exit via SystemExit)."""
    try:
        code = main(list(argv))
    except SystemExit as exited:
        code = exited.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert out == ""
    assert not any(noise in err for noise in NOISE), err
    assert len(err.strip().splitlines()) == 1, err
    return code, err.strip()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["book", "speck2fdevkit", "--minutes", "ten"], "--minutes must be a whole number"),
        (["booking", "create", "x", "--minutes", "0"], "--minutes must be a whole number of at"),
        (["extend", "seven", "--minutes", "5"], "BOOKING must be a whole number"),
        (["book", "x", "--minutes", "5", "--start", "soon"], "--start 'soon' is not an ISO 8601"),
        (["upload", "m.pt", "--input-shape", "a,b"], "--input-shape 'a,b' is not C,H,W"),
        (["deploy", "7", "dev", "--layers", "first"], "--layers 'first' is not 'auto'"),
        (["stream", "dev", "--in", "x.npy"], "missing --out"),
        (["frobnicate"], "'frobnicate' is no command"),
        (["booking", "frob"], "'frob' is no command: one of 'list'"),
        (["token", "create", "ci", "--days", "0"], "--days must be a whole number of at least 1"),
        (["record", "dev", "--duration", "long"], "--duration must be a number of seconds"),
    ],
)
def test_a_wrong_command_line_is_one_sentence_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, err = failed(capsys, *argv)
    assert code == Exit.USAGE
    assert err.startswith("specklab: ") and said in err


def test_with_json_a_wrong_command_line_is_an_error_body(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = failed(capsys, "book", "x", "--minutes", "ten", "--json")
    assert code == Exit.USAGE
    body = ErrorBody.model_validate_json(err)
    assert body.code == "usage" and "--minutes must be a whole number" in body.message


def test_no_token_names_the_variable_and_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPECKLAB_TOKEN", raising=False)
    code, err = failed(capsys, "devices", "--url", "http://127.0.0.1:9")
    assert code == Exit.NOT_ALLOWED
    assert err == "specklab: no API token: set SPECKLAB_TOKEN or pass --token"
    code, err = failed(capsys, "devices", "--url", "http://127.0.0.1:9", "--json")
    assert json.loads(err)["code"] == "no_token"


def test_nothing_is_drawn_for_an_upload_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_file: Path
) -> None:
    monkeypatch.delenv("SPECKLAB_TOKEN", raising=False)
    code, err = failed(
        capsys, "upload", str(model_file), "--input-shape", "1,8,8", "--url", "http://127.0.0.1:9"
    )
    assert code == Exit.NOT_ALLOWED and "upload" not in err and "%" not in err


def test_a_missing_model_file_is_named_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "lenet.pt"
    code, err = failed(capsys, "upload", str(missing), "--input-shape", "1,28,28", *NOWHERE)
    assert code == Exit.USAGE and f"{missing}: no such file" in err


@pytest.mark.parametrize(
    ("out", "said"),
    [
        ("rec.aedat4", "--out: only DVS recordings export to .aedat4; use .npy"),
        ("nowhere/rec.npy", "there is no folder"),
    ],
)
def test_a_recording_that_could_not_be_saved_is_refused_before_it_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, out: str, said: str
) -> None:
    argv = ["record", "dev:0", "--duration", "5", "--source", "monitor", "--out"]
    code, err = failed(capsys, *argv, str(tmp_path / out), *NOWHERE)
    assert code == Exit.USAGE and said in err and "record dev:0" not in err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("", "is not valid JSON (line 1 column 1)"),
        ('{"cores": [1,\n', "is not valid JSON (line 2 column 1)"),
        (None, "cannot be read"),
    ],
)
def test_a_bad_patch_file_is_named_with_where_it_breaks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, said: str
) -> None:
    patch = tmp_path / "patch.json"
    if content is not None:
        patch.write_text(content)
    code, err = failed(capsys, "deploy", "7", "dev:0", "--patch", str(patch), *NOWHERE)
    assert code == Exit.USAGE
    assert err == f"specklab: --patch file {patch} {said}" or (
        content is None and err.startswith(f"specklab: --patch file {patch} cannot be read")
    )


def test_an_unreachable_daemon_names_the_url_to_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = failed(capsys, "devices", *NOWHERE)
    assert code == Exit.UNREACHABLE
    assert "http://127.0.0.1:9" in err and "SPECKLAB_URL or pass --url" in err


def _error(status: int, code: str, message: str, detail: object = None) -> Exception:
    return api_error(status, ErrorBody(code=code, message=message, detail=detail))


@pytest.mark.parametrize(
    "message",
    [
        "an API token is required: send 'Authorization: Bearer <token>'",
        "the Authorization header must be 'Bearer <token>'",
    ],
)
def test_http_headers_never_reach_a_person(message: str) -> None:
    said = sentence(_error(401, "unauthorized", message))
    assert "Bearer" not in said and "Authorization" not in said
    assert said.endswith("set SPECKLAB_TOKEN or pass --token")


def test_routes_and_pydantic_links_never_reach_a_person() -> None:
    error = _error(
        409, "not_booked", "dev:0 is not booked by you now: book it first (POST /v1/bookings)"
    )
    assert sentence(error) == (
        "dev:0 is not booked by you now: book it first (specklab book DEVICE --minutes N)"
    )
    with pytest.raises(ValidationError) as refused:
        BookingCreate(device_type="speck2fdevkit", minutes=0)
    said = sentence(refused.value)
    assert said.startswith("--minutes: ") and "pydantic" not in said
    detail = [{"loc": ["body", "ends_at"], "msg": "must be after the start", "type": "x"}]
    assert sentence(_error(422, "invalid_request", "body.ends_at: ...", detail)) == (
        "--until: must be after the start"
    )


def test_unknown_ids_point_at_the_listing_and_the_closest_ids() -> None:
    hinted = _error(404, "device_not_found", "no device speck2fdevkit:0; did you mean x:0?")
    assert sentence(hinted) == (
        "no device speck2fdevkit:0; did you mean x:0? (specklab device list shows the lab's "
        "devices)"
    )
    only_detail = _error(404, "device_not_found", "no device a:0", {"closest": ["virtual-a:0"]})
    assert sentence(only_detail).endswith("; did you mean virtual-a:0?")


def test_a_busy_type_says_which_flag_takes_the_next_free_slot() -> None:
    message = (
        "every speck2fdevkit device is booked then; x:1 is next free for 5 minutes at "
        "2030-01-01T10:05:00+00:00 (ask for the next free slot to book that)"
    )
    error = _error(409, "booking_conflict", message, {"device_id": "x:1", "next_free": None})
    assert isinstance(error, BookingConflict)
    assert sentence(error).endswith("at 2030-01-01T10:05:00+00:00 (--next-free books that slot)")


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_every_worded_code_reads_as_a_sentence(code: str) -> None:
    said = sentence(_error(400, code, "the daemon's words"))
    assert said and "{" not in said and "/v1/" not in said


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (_error(404, "model_not_found", "no model 3"), Exit.REFUSED),
        (_error(401, "invalid_token", "the API token is not valid"), Exit.NOT_ALLOWED),
        (_error(403, "read_only", "observers can only read"), Exit.NOT_ALLOWED),
        (_error(500, "internal_error", "boom"), Exit.UNREACHABLE),
        (TransportError("cannot reach the daemon"), Exit.UNREACHABLE),
        (WaitTimeout("did not start"), Exit.GAVE_UP),
        (ValueError("x = 300 is out of range"), Exit.USAGE),
    ],
)
def test_exit_status_per_kind_of_failure(error: Exception, status: Exit) -> None:
    assert exit_status(error) == status


def test_the_daemons_refusals_in_words_and_with_json_as_its_error_body(
    capsys: pytest.CaptureFixture[str], account: Account
) -> None:
    code, out, err = run(capsys, account, "booking", "show", "999999")
    assert (code, out) == (Exit.REFUSED, "")
    assert err.strip().endswith("(specklab booking list shows yours)")
    assert not any(noise in err for noise in NOISE)
    code, out, err = run(capsys, account, "booking", "show", "999999", "--json")
    assert code == Exit.REFUSED and json.loads(err)["code"] == "booking_not_found"


def test_a_token_the_daemon_refuses_names_the_variable(
    capsys: pytest.CaptureFixture[str], account: Account
) -> None:
    stranger = Account(account.name, "spk_not-a-token-of-this-lab", account.url)
    code, _, err = run(capsys, stranger, "devices")
    assert code == Exit.NOT_ALLOWED
    assert "set SPECKLAB_TOKEN or pass --token" in err and "Bearer" not in err


def test_an_observers_upload_is_refused_before_any_bar_is_drawn(
    capsys: pytest.CaptureFixture[str], admin: object, model_file: Path
) -> None:
    observer = new_account(admin, role="observer")  # type: ignore[arg-type]
    code, out, err = run(capsys, observer, "upload", str(model_file), "--input-shape", "1,8,8")
    assert code == Exit.NOT_ALLOWED and out == ""
    assert err.strip().splitlines() == [
        f"specklab: {observer.name} is an observer: observers can only read (pass a user's "
        "--token to change things)"
    ]
