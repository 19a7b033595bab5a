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
    ("latent-ode-spirals", "spirals"),
    ("ncde-missing", "accuracy_vs_missing"),
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


def _kept_sections(page: Path) -> dict[str, list[str]]:
    """The current page's section of each experiment (its lines, from its ``## `` title on)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in page.read_text().splitlines() if page.exists() else []:
        if line.startswith("## "):
            current = sections.setdefault(line, [])
        if current is not None:
            current.append(line)
    return {
        name: sections[f"## {get(name).title}"] for name, _ in FIGURES if f"## {get(name).title}" in sections
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="reuse the quick-tier outputs in RUNS/NAME where present")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="refresh only these experiments; keep the others' figures and text",
    )
    args = parser.parse_args()
    names = list(dict.fromkeys(n for n, _ in FIGURES))
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(
            f"--only: not in the gallery's list: {', '.join(unknown)} (choose from {', '.join(names)})"
        )
    kept = _kept_sections(DOCS / "gallery.md") if args.only else {}
    refresh = set(args.only or names)
    missing = [n for n in names if n not in refresh and n not in kept]
    if missing:
        parser.error(f"--only: the page has no section for {', '.join(missing)} yet; name them too")
    out = DOCS / "gallery"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        if any(old.name.startswith(f"{n}-") for n in refresh):
            old.unlink()
    lines = [
        "# Gallery",
        "",
        "Figures of the experiments' quick tiers (`torchnde run NAME --quick`, seed 0), downsized.",
        "Each report holds the full set at full size; the [experiments guide](experiments.md) says",
        "what a run writes. This page and its figures are made by `make gallery`.",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name not in refresh:
                section = kept[name]
                while section and not section[-1].strip():
                    section = section[:-1]
                lines += ["", *section]
                continue
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
