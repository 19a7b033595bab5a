"""Every example in the guides and the README runs as written: each ```python block alone, in a
fresh namespace.

A reader copies one block, not a page, so each block is self-contained (its own imports and
data). Blocks state their results with ``assert``; a block that is not meant to run (shell
commands, diagrams, a file layout) uses another fence language (``bash``, ``text``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from torchnde.experiments import _framework

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", flags=re.S | re.M)
_NOT_RUN = {"bash", "text"}  # fence languages that are shown, not executed


def _guides() -> list[Path]:
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)]


def _blocks() -> list[tuple[str, str, str]]:
    """(``guide:line``, fence language, code) of every fenced block in the guides."""
    found = []
    for path in _guides():
        text = path.read_text()
        for m in _FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", m.group(1).strip(), m.group(2)))
    return found


_PYTHON = [(where, code) for where, lang, code in _blocks() if lang == "python"]


def test_every_block_names_a_language_that_is_run_or_shown():
    unknown = [(where, lang) for where, lang, _ in _blocks() if lang != "python" and lang not in _NOT_RUN]
    assert not unknown, f"fence these as python (run by this test) or as one of {sorted(_NOT_RUN)}: {unknown}"


def test_every_guide_with_code_has_runnable_examples():
    guides = {where.split(":")[0] for where, _ in _PYTHON}
    needed = ["index", "solve", "gradients", "models", "datasets", "experiments"]
    assert {"README.md", *(f"docs/{name}.md" for name in needed)} <= guides


@pytest.mark.parametrize(("where", "code"), _PYTHON, ids=[where for where, _ in _PYTHON])
def test_example_runs_alone(where, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands in a temporary folder
    _framework.names()  # every experiment registered first: a block may add an example one
    registered = dict(_framework._REGISTRY)
    dtype = torch.get_default_dtype()
    guide, line = where.rsplit(":", 1)
    torch.manual_seed(0)
    try:  # padded so that a traceback names the guide's own line numbers
        exec(compile("\n" * int(line) + code, str(ROOT / guide), "exec"), {"__name__": "__docs__"})
    finally:
        _framework._REGISTRY.clear()
        _framework._REGISTRY.update(registered)
        torch.set_default_dtype(dtype)
    capsys.readouterr()
