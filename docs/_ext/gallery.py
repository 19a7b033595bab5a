"""Refresh docs/gallery/: rerun the quick tiers below, copy the chosen figures downsized, and
write docs/gallery.md (``make gallery``; about 15 minutes on 2 cores). ``--runs DIR`` takes the
outputs of quick-tier runs already in ``DIR/NAME`` instead of running them again.

The figures are committed rather than made while the site builds: making them means training
every model of the list, minutes each, and ``make test`` builds the site on every run. Each
figure is resized to at most ``WIDTH`` pixels and stored as a palette PNG, so that each stays
under ``MAX_BYTES`` (``tests/test_docs_gallery.py`` holds them to it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from PIL import Image

from torchnde.experiments import get, run_experiment

DOCS = Path(__file__).resolve().parents[1]
WIDTH = 900
MAX_BYTES = 150_000

# (experiment, figure): what the gallery shows, in this order
FIGURES = [
    ("ude-lotka-volterra", "extrapolation"),
    ("hnn-spring", "energy"),
    ("lnn-double-pendulum", "rollouts"),
    ("anode-g1d", "g1d_flows"),
    ("dissecting-reflection", "reflection"),
    ("sonode-oscillators", "oscillators_fits"),
    ("pinn-burgers", "burgers_fields"),
    ("rnode-regularisation", "rnode_2spirals_densities"),
]


def _captions(report: Path) -> dict[str, str]:
    """Figure file name -> caption, from a report's ``![caption](name.png)`` lines."""
    return {name: caption for caption, name in re.findall(r"!\[(.*?)\]\((.*?\.png)\)", report.read_text())}


def _shrink(source: Path, target: Path) -> int:
    image = Image.open(source).convert("RGB")
    if image.width > WIDTH:
        image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target.stat().st_size


def _quick_run(name: str, runs: Path | None, tmp: Path) -> tuple[Path, dict]:
    """The folder of a quick-tier run of ``name`` (reused from ``runs`` if there) and its metrics."""
    if runs is not None and (runs / name / "report.md").exists():
        doc = json.loads((runs / name / "metrics.json").read_text())
        if doc["quick"] and doc["seed"] == 0:
            return runs / name, doc
    print(f"running {name} (quick tier) ...", flush=True)
    return tmp / name, run_experiment(name, quick=True, out=tmp / name, progress=False)


def _outcome(doc: dict) -> str:
    known = "; ".join(c["name"] for c in doc["checks"] if c.get("known_failure") and not c["passed"])
    if doc["passed"] and not known:
        return "Quick tier, seed 0: every criterion passed."
    if doc["passed"]:
        return f"Quick tier, seed 0: passed; not reproduced (known): {known}; the report says why."
    failed = "; ".join(c["name"] for c in doc["checks"] if not c["passed"] and not c.get("known_failure"))
    return f"Quick tier, seed 0: not passed ({failed}); the report says why."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="reuse the quick-tier outputs in RUNS/NAME where present")
    args = parser.parse_args()
    out = DOCS / "gallery"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    lines = [
        "# Gallery",
        "",
        "Figures of the experiments' quick tiers (`torchnde run NAME --quick`, seed 0), downsized.",
        "Each report holds the full set at full size; the [experiments guide](experiments.md) says",
        "what a run writes. This page and its figures are made by `make gallery`.",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in dict.fromkeys(n for n, _ in FIGURES):
            folder, doc = _quick_run(name, args.runs, Path(tmp))
            captions = _captions(folder / "report.md")
            exp = get(name)
            lines += ["", f"## {exp.title}", "", f"`torchnde run {name} --quick`: {exp.paper}.", ""]
            lines += [_outcome(doc)]
            for figure in (f for n, f in FIGURES if n == name):
                target = out / f"{name}-{figure}.png"
                size = _shrink(folder / f"{figure}.png", target)
                if size > MAX_BYTES:
                    print(f"{target.name}: {size} bytes, over {MAX_BYTES}", file=sys.stderr)
                    return 1
                caption = captions.get(f"{figure}.png", figure)
                lines += ["", f"![{name}: {figure}](gallery/{target.name})", "", f"*{caption}*"]
                print(f"  {target.relative_to(DOCS.parent)}: {size // 1000} kB", flush=True)
    (DOCS / "gallery.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {(DOCS / 'gallery.md').relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
