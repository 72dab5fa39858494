"""Running one client command: the token check, the client, warnings and failures."""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .failures import SENTENCES, Exit, report
from .parsing import UsageError

if TYPE_CHECKING:
    from .._client import Client

Handler = Callable[["Client", argparse.Namespace], Any]


def runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """``handler`` as a command: nothing is sent (or drawn) without a token, and every failure
    becomes one sentence (``--json``: an ErrorBody) and an exit status."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from .._client import Client
        from .._core import resolve_token
        from .._errors import AuthenticationError, SpecklabError, SpecklabWarning

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SpecklabWarning)
                try:
                    if resolve_token(args.token) is None:
                        raise AuthenticationError(401, "no_token", SENTENCES["no_token"])
                    with Client(args.url, args.token) as client:
                        handler(client, args)
                finally:
                    _print_warnings(caught)
        except KeyboardInterrupt:
            return Exit.INTERRUPTED
        except (SpecklabError, UsageError, ValueError, OSError) as error:
            return report(error, as_json=args.json)
        return Exit.OK

    return run


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """The SDK's warnings as one plain line each on stderr; other warnings as Python shows them."""
    from .._errors import SpecklabWarning

    for item in caught:
        if issubclass(item.category, SpecklabWarning):
            print(f"specklab: warning: {item.message}", file=sys.stderr)
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
