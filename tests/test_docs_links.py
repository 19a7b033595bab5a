"""Nothing in the guides, the README or the experiments' reports points at a file the repository
does not have: links and images resolve to files inside it, and so do the file paths they cite.

External links (``https://``, papers' arXiv or DOI pages) are citations and are not followed.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.I)
# a repository path quoted in code: `tests/test_order.py`, `docs/solve.md`, `solvers/base.py`
_CITED_PATH = re.compile(r"`([\w.*-]+(?:/[\w.*-]+)+\.(?:md|py|toml|yml|yaml|json|png|txt))`")
_FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)]


def _links(path: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", path.read_text()))


def _exists_in_repo(target: Path) -> bool:
    resolved = target.resolve()
    return resolved.is_relative_to(ROOT) and resolved.exists()


def test_pages_have_links_to_check():
    assert any(_links(p) for p in _pages())  # the pattern still matches what the pages write


def test_every_relative_link_resolves_to_a_file_in_the_repository():
    broken = []
    for page in _pages():
        for target in _links(page):
            if _SCHEME.match(target) or target.startswith("#"):
                continue
            if not _exists_in_repo(page.parent / target.split("#")[0]):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that are not in the repository:\n" + "\n".join(broken)


def test_every_cited_repository_path_exists():
    """A path quoted in code names a file of this repository (from its root, or from the
    package's folder as the architecture page writes them)."""
    missing = []
    for page in _pages():
        for cited in _CITED_PATH.findall(page.read_text()):
            bases = (ROOT, ROOT / "src" / "torchnde")
            if not any(_exists_in_repo(base / cited) or list(base.glob(cited)) for base in bases):
                missing.append(f"{page.relative_to(ROOT)}: {cited}")
    assert not missing, "paths cited that are not in the repository:\n" + "\n".join(missing)


def test_experiment_reports_cite_no_file_outside_the_repository():
    """The claims and notes an experiment writes into its report name files of this repository
    only (``report.md`` and a seed sweep's ``sweep.md``, in whatever folder, are what the harness
    writes)."""
    written = {"report.md", "sweep.md"}
    missing = []
    for source in sorted((ROOT / "src" / "torchnde" / "experiments").glob("*.py")):
        for name in re.findall(r"[\w./-]*\w\.md\b", source.read_text()):
            if Path(name).name not in written and not _exists_in_repo(ROOT / name):
                missing.append(f"{source.relative_to(ROOT)}: {name}")
    assert not missing, "files cited by the experiments that are not in the repository:\n" + "\n".join(
        missing
    )
