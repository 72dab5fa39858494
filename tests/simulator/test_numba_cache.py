"""The kernel's numba cache is dropped when code compiled into it changes elsewhere."""

from __future__ import annotations

from pathlib import Path

from specklab.server.simulator.numba_cache import forget_stale_cache


def _tree(root: Path) -> tuple[Path, Path]:
    (root / "__pycache__").mkdir()
    module = root / "kernel.py"
    module.write_text("# kernel\n")
    helper = root / "helper.py"
    helper.write_text("LANES = 16\n")
    return module, helper


def _cached(root: Path) -> Path:
    entry = root / "__pycache__" / "kernel.run-10.py311.1.nbc"
    entry.write_bytes(b"machine code")
    (root / "__pycache__" / "kernel.run-10.py311.nbi").write_bytes(b"index")
    return entry


def test_cache_survives_while_compiled_in_sources_are_unchanged(tmp_path: Path) -> None:
    module, helper = _tree(tmp_path)
    forget_stale_cache(module, [helper])
    entry = _cached(tmp_path)
    forget_stale_cache(module, [helper])
    assert entry.exists()


def test_changing_a_compiled_in_source_drops_only_that_modules_cache(tmp_path: Path) -> None:
    module, helper = _tree(tmp_path)
    forget_stale_cache(module, [helper])
    entry = _cached(tmp_path)
    other = tmp_path / "__pycache__" / "engine.run-3.py311.1.nbc"
    other.write_bytes(b"another module's code")
    helper.write_text("LANES = 8\n")
    forget_stale_cache(module, [helper])
    assert not entry.exists()
    assert not entry.with_name("kernel.run-10.py311.nbi").exists()
    assert other.exists()


def test_a_cache_from_before_the_guard_is_dropped(tmp_path: Path) -> None:
    module, helper = _tree(tmp_path)
    entry = _cached(tmp_path)
    forget_stale_cache(module, [helper])
    assert not entry.exists()
