"""``specklab model``: list, show, report, delete, upload."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .output import emit
from .parsing import UsageError, Verb, positive, shape
from .running import runner

if TYPE_CHECKING:
    from .._client import Client
    from .._remote import RemoteModel


def _list(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=runner(_models))


def _models(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    models = client.models()
    headers = ("id", "name", "format", "owner", "created", "layers")
    rows = [(m.id, m.name, m.format, m.owner, m.created_at, len(m.report.layers)) for m in models]
    emit(args, [m.info for m in models], lambda: format_table(headers, rows))


def _one(handler: Any) -> Verb:
    def declare(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model_id", type=positive, metavar="MODEL")
        parser.set_defaults(handler=runner(handler))

    return declare


def _summary(model: RemoteModel) -> str:
    report = model.report
    fits = "fits" if report.ok else "does NOT fit"
    return (
        f"model {model.id} ({model.name}, {model.format}, {model.info.size_bytes} bytes) "
        f"of {model.owner}, {model.created_at:%Y-%m-%d %H:%M}: {len(report.layers)} layers, "
        f"{fits} on {model.options.chip}"
    )


def _show(client: Client, args: argparse.Namespace) -> None:
    model = client.model(args.model_id)
    emit(args, model.info, lambda: _summary(model))


def _report(client: Client, args: argparse.Namespace) -> None:
    model = client.model(args.model_id)
    emit(args, model.report, model.report_table)


def _delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_model(args.model_id)
    emit(args, {"deleted": args.model_id}, lambda: f"deleted model {args.model_id}")


def _upload_verb(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path)
    parser.add_argument("--input-shape", type=shape, required=True, help="C,H,W e.g. 1,28,28")
    parser.add_argument("--name", help="the model's name (default: the file name)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a compile option, VALUE in JSON (e.g. dvs_input=true, chip='\"speck2e\"')",
    )
    parser.add_argument("--report", action="store_true", help="print the full placement table")
    parser.set_defaults(handler=runner(_upload))


def _upload(client: Client, args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--option {item!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text  # a bare word: take it as a string
    if not args.file.is_file():
        raise UsageError(f"FILE {args.file}: no such file")
    model = client.compile(
        args.file, input_shape=args.input_shape, name=args.name, progress=True, **options
    )

    def table() -> str:
        summary = f"model {model.id} ({model.name}, {model.format})"
        return f"{summary}\n{model.report_table()}" if args.report else f"{summary}: compiled"

    emit(args, model.info, table)


VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("your models (admins: everyone's)", _list),
    "show": ("one model: name, format, owner, whether it fits", _one(_show)),
    "report": ("a model's compile report: placement, memory, problems", _one(_report)),
    "delete": ("delete a model", _one(_delete)),
    "upload": ("upload and compile a model (TorchScript, .pt2, NIR)", _upload_verb),
}
