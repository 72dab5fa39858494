"""examples/quickstart.py, the guide's first example, run as a user would against the daemon."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ..chip_configs import GUIDE_PLACEMENT
from .conftest import Account

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_the_quickstart_compiles_books_deploys_and_prints_output_events(
    account: Account,
) -> None:
    command = [sys.executable, str(EXAMPLE), "--url", account.url, "--token", account.token]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The compile report: the guide's five layers, placed as the vendor places them.
    rows = [line.split() for line in out.splitlines() if re.match(r"^\d\s+(conv2d|linear)", line)]
    assert {int(row[0]): int(row[2]) for row in rows} == GUIDE_PLACEMENT
    summary = re.search(r"sent 4000 spikes to (\S+), got (\d+) back", out)
    assert summary is not None and int(summary[2]) > 0
    spikes = re.findall(r"^Spike\(layer=4, x=0, y=0, feature=(\d), timestamp=\d+\)$", out, re.M)
    assert len(spikes) == min(20, int(summary[2]))
