"""The gallery's figures are committed, shown, and small (``make gallery`` makes them)."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
MAX_BYTES = 150_000  # as docs/_ext/gallery.py


def test_every_gallery_figure_is_shown_and_every_shown_figure_is_there():
    shown = set(re.findall(r"!\[[^\]]*\]\((gallery/[^)]+\.png)\)", (DOCS / "gallery.md").read_text()))
    stored = {p.relative_to(DOCS).as_posix() for p in (DOCS / "gallery").glob("*")}
    assert len(shown) >= 6
    assert shown == stored


def test_gallery_figures_are_small_pngs():
    for path in sorted((DOCS / "gallery").glob("*.png")):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", path.name
        assert len(data) <= MAX_BYTES, f"{path.name}: {len(data)} bytes; rerun `make gallery`"
