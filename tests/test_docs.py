"""The guide's examples run as written (each guide's python blocks, in order, as one script)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("guide", ["models.md"])
def test_guide_examples_run(guide, capsys):
    text = (DOCS / guide).read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    assert code.strip()
    exec(compile(code, str(DOCS / guide), "exec"), {"__name__": "__docs__"})
    assert "x·y" in capsys.readouterr().out
