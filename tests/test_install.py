"""A plain install works: in a bare virtual environment holding only torch (with what torch itself
depends on), numpy and the package, ``import torchnde`` works, a solve and a training step run,
and what needs an optional dependency says which extra to install.

Nothing is downloaded: the environment is made with ``python -m venv --without-pip``; torch's and
numpy's installed distributions are linked into it file tree by file tree (exactly what
``pip install torch numpy`` would put there: each distribution of their dependency closure, no
extras), and the package is built into a wheel offline from a copy of the repository and
installed with ``pip --python <venv> install --no-deps --no-index``."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchnde._optional import _PIP_NAMES, MissingDependency, missing, require
from torchnde.experiments import run_experiment

REPO = Path(__file__).resolve().parents[1]
# Subprocesses see neither the test run's PYTHONPATH (the working tree) nor a user site.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONNOUSERSITE": "1"}
OPTIONAL = ("scipy", "matplotlib", "tqdm", "pysindy")  # sympy comes with torch itself


def _closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` need, following requirements without extras."""
    packaging = pytest.importorskip("packaging.requirements")
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen[name] = dist = metadata.distribution(name)
        for spec in dist.requires or []:
            req = packaging.Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _link(dist: metadata.Distribution, site: Path) -> None:
    """Link each top-level entry of ``dist`` (packages, modules, its ``.dist-info``) into ``site``."""
    if dist.files is None:
        pytest.skip(f"{dist.metadata['Name']} has no RECORD: cannot tell its files")
    tops = {f.parts[0] for f in dist.files if f.parts and f.parts[0] not in ("..", "__pycache__")}
    for top in tops:
        target = Path(dist.locate_file(top))
        if target.exists() and not (site / top).exists():
            (site / top).symlink_to(target)


def _bare_venv(tmp_path: Path) -> Path:
    """A virtual environment with torch, numpy and the package only; returns its python."""
    pip_version = tuple(int(x) for x in metadata.version("pip").split(".")[:2])
    if pip_version < (22, 3):
        pytest.skip("pip >= 22.3 is needed for pip --python")
    pytest.importorskip("setuptools")  # the build backend, used without build isolation
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, env=ENV,
        ).stdout.strip()
    )  # fmt: skip
    for dist in _closure(("torch", "numpy")):
        _link(dist, site)
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
         str(source)], check=True, env=ENV,
    )  # fmt: skip
    (wheel,) = wheels.glob("torchnde-*.whl")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, env=ENV,
    )  # fmt: skip
    return python


SCRIPT = """
import importlib.util, json, math, sys
absent = [m for m in {optional!r} if importlib.util.find_spec(m) is None]
import torch, torchnde as nde
from torchnde.compat.torchdiffeq import odeint

out = {{"absent": absent, "where": nde.__file__}}
ts = torch.linspace(0, 1, 5, dtype=torch.float64)
sol = nde.solve(lambda t, y: -y, torch.ones(2, dtype=torch.float64), ts, rtol=1e-8, atol=1e-10)
out["solve_error"] = float((sol.ys[:, 0] - torch.exp(-ts)).abs().max())
out["odeint_error"] = float((odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64), ts)[:, 0]
                             - torch.exp(-ts)).abs().max())

torch.manual_seed(0)
model = nde.models.NeuralODE(torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(),
                                                 torch.nn.Linear(16, 2)), solver="dopri5")
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, target = torch.randn(8, 2), torch.zeros(8, 2)
losses = []
for _ in range(2):
    loss = (model(x) - target).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(float(loss))
out["losses"] = losses

def error_of(fn):
    try:
        fn()
    except ImportError as err:
        return type(err).__name__ + ": " + str(err)
    return None

from torchnde.experiments import run_experiment
out["experiment"] = error_of(lambda: run_experiment("hnn-spring", quick=True, out=sys.argv[1]))
out["closed_form"] = tuple(nde.datasets.mass_spring(n_trajectories=2, seed=0).x.shape)
out["dataset"] = error_of(lambda: nde.datasets.pendulum(n_trajectories=2, seed=0))
out["scipy_solver"] = error_of(lambda: odeint(lambda t, y: -y, torch.ones(1), ts, method="scipy_solver"))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_bare_install_imports_solves_trains_and_names_the_extra(tmp_path):
    python = _bare_venv(tmp_path)
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(SCRIPT.format(optional=OPTIONAL)))
    done = subprocess.run(
        [str(python), "-I", str(script), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["absent"] == list(OPTIONAL), "the environment is not bare"
    assert str(tmp_path) in out["where"]  # the installed copy, not the working tree
    assert out["solve_error"] < 1e-7 and out["odeint_error"] < 1e-5
    assert all(math.isfinite(v) for v in out["losses"])
    assert out["losses"][1] < out["losses"][0]  # one SGD step lowered the loss
    for key in ("experiment", "dataset", "scipy_solver"):
        assert out[key] is not None and out[key].startswith("MissingDependency"), (key, out[key])
        assert 'pip install "torchnde[experiments]"' in out[key], out[key]
    assert out["closed_form"] == [2, 30, 2]  # a closed-form dataset needs no scipy
    assert "'matplotlib'" in out["experiment"] and "'scipy'" in out["experiment"]

    cli = subprocess.run(
        [str(python.parent / "torchnde"), "run", "hnn-spring", "--quick", "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert cli.returncode == 2
    assert 'pip install "torchnde[experiments]"' in cli.stderr and "Traceback" not in cli.stderr
    listed = subprocess.run(
        [str(python.parent / "torchnde"), "list"], capture_output=True, text=True, env=ENV
    )
    assert listed.returncode == 0 and "hnn-spring" in listed.stdout


def test_require_names_the_extra_and_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(
        MissingDependency, match=r"reference needs 'scipy'.*pip install \"torchnde\[experiments\]\""
    ):
        require("scipy.integrate", extra="experiments", purpose="a reference")
    assert missing(["scipy.integrate", "numpy", "scipy"]) == ["scipy"]


def test_require_passes_on_an_error_inside_an_installed_package(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("brokenpkg", extra="experiments")
    assert not isinstance(info.value, MissingDependency) and info.value.name == "not_a_module_anywhere"


def test_an_experiment_checks_its_extra_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pysindy", None)
    with pytest.raises(
        MissingDependency, match=r"'ude-lotka-volterra' needs 'pysindy'.*torchnde\[experiments\]"
    ):
        run_experiment("ude-lotka-volterra", quick=True, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing started


def _third_party_imports() -> tuple[list[tuple[str, str, bool]], list[tuple[str, str, str]]]:
    """Plain imports of packages other than the standard library, torch, numpy and torchnde
    (file, package, inside a function?), and every ``require(module, extra=...)`` (file,
    package, extra)."""
    import ast

    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", "torchnde", "__future__"}
    plain: list[tuple[str, str, bool]] = []
    required: list[tuple[str, str, str]] = []
    for path in sorted((REPO / "src" / "torchnde").rglob("*.py")):
        rel = str(path.relative_to(REPO / "src"))
        tree = ast.parse(path.read_text())
        inner = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                extra = next(k.value.value for k in node.keywords if k.arg == "extra")
                required.append((rel, node.args[0].value.split(".")[0], extra))
            plain += [
                (rel, n.split(".")[0], id(node) in inner) for n in names if n.split(".")[0] not in allowed
            ]
    return plain, required


def test_optional_packages_are_imported_where_needed_and_their_extra_lists_them():
    """No module imports an optional package at import time; inside functions, the core and the
    datasets use ``require`` (an error naming the extra), and the experiments import only what
    ``run_experiment`` checks before it starts (its ``EXTRA``, all in the experiments extra)."""
    import tomllib

    from torchnde.experiments._framework import EXTRA

    plain, required = _third_party_imports()
    at_import = [(rel, pkg) for rel, pkg, inside in plain if not inside]
    assert not at_import, f"imported at module level: {at_import}"
    # tqdm is optional even there: the progress bar falls back to a plain line without it
    unchecked = [(rel, pkg) for rel, pkg, _ in plain if not rel.startswith("torchnde/experiments/")
                 or pkg not in {*EXTRA, "tqdm"}]  # fmt: skip
    assert not unchecked, f"import these through torchnde._optional.require: {unchecked}"
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def listed(extra: str) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", spec)[0].lower() for spec in extras[extra]}

    assert required, "no require() calls found"
    for rel, package, extra in required:
        name = _PIP_NAMES.get(package, package)  # the import name's distribution (sklearn: scikit-learn)
        assert name.lower() in listed(extra), f"{rel}: {name} is not in the {extra!r} extra"
    assert {*EXTRA, "tqdm"} <= listed("experiments")
