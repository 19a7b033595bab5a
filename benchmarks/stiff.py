"""Stiff benchmarks: Robertson and Van der Pol (mu = 1000) with torchnde's implicit solvers
beside scipy's Radau, BDF and LSODA and diffrax's Kvaerno5; time (median of repeats), steps,
evaluations and relative error against Radau at rtol 1e-10.

The torchnde and scipy solves are timed interleaved (one repeat of each in turn, then the next
repeat), so that a busy machine slows them alike and the ``x Radau`` column (time over scipy
Radau's with its default finite-difference Jacobian) holds; diffrax is timed after them.

``python -m benchmarks.stiff [--out DIR] [--repeats N]`` writes ``stiff.json`` and ``stiff.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import configure_threads, fmt_time, short_error

RTOL = 1e-6
RADAU = "scipy Radau (finite-difference Jacobian, its default)"  # the reference of the ratios
# name -> (y0, t1, atol)
PROBLEMS = {
    "robertson": ([1.0, 0.0, 0.0], 1e5, 1e-10),
    "van_der_pol_mu1000": ([2.0, 0.0], 3000.0, 1e-8),
}


def _torch_field(name: str) -> Callable:
    import torch

    if name == "robertson":

        def f(t: Any, y: Any) -> Any:
            a, b, c = y.unbind()
            return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b])

        return f

    def vdp(t: Any, y: Any) -> Any:
        x, v = y.unbind()
        return torch.stack([v, 1000.0 * (1 - x * x) * v - x])

    return vdp


def _torch_jac(name: str) -> Callable:
    """The exact Jacobian in torch operations (differentiable, as the solver's option asks)."""
    import torch

    if name == "robertson":

        def jac(t: Any, y: Any) -> Any:
            a, b, c = y.unbind()
            z = torch.zeros_like(a)
            return torch.stack(
                [
                    torch.stack([z - 0.04, 1e4 * c, 1e4 * b]),
                    torch.stack([z + 0.04, -1e4 * c - 6e7 * b, -1e4 * b]),
                    torch.stack([z, 6e7 * b, z]),
                ]
            )

        return jac

    def vdp_jac(t: Any, y: Any) -> Any:
        x, v = y.unbind()
        return torch.stack(
            [
                torch.stack([torch.zeros_like(x), torch.ones_like(v)]),
                torch.stack([-2000.0 * x * v - 1, 1000.0 * (1 - x * x)]),
            ]
        )

    return vdp_jac


def _numpy_field(name: str) -> Callable:
    if name == "robertson":
        return lambda t, y: np.array(
            [
                -0.04 * y[0] + 1e4 * y[1] * y[2],
                0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                3e7 * y[1] ** 2,
            ]
        )
    return lambda t, y: np.array([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


def _numpy_jac(name: str) -> Callable:
    if name == "robertson":
        return lambda t, y: np.array(
            [
                [-0.04, 1e4 * y[2], 1e4 * y[1]],
                [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                [0.0, 6e7 * y[1], 0.0],
            ]
        )
    return lambda t, y: np.array([[0.0, 1.0], [-2000.0 * y[0] * y[1] - 1.0, 1000.0 * (1 - y[0] ** 2)]])


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    return _time_interleaved({"": fn}, repeats)[""]


def _time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warm: dict[str, Any] | None = None
) -> dict[str, tuple[float, Any]]:
    """``{label: (median time, last output)}``: a warm-up call of each (for jax, the compilation;
    ``warm``: the outputs of warm-up calls already made), then ``repeats`` rounds calling each once
    in turn."""
    outs = {label: fn() for label, fn in fns.items()} if warm is None else dict(warm)
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            start = time.perf_counter()
            outs[label] = fn()
            times[label].append(time.perf_counter() - start)
    return {label: (statistics.median(times[label]), outs[label]) for label in fns}


def run_problem(name: str, repeats: int) -> list[dict[str, Any]]:
    from scipy.integrate import solve_ivp

    y0, t1, atol = PROBLEMS[name]
    f_np, jac = _numpy_field(name), _numpy_jac(name)
    ref = solve_ivp(f_np, (0.0, t1), y0, method="Radau", rtol=1e-10, atol=atol * 1e-4, jac=jac).y[:, -1]

    def rel(y: Any) -> float:
        return float(np.max(np.abs(np.asarray(y, dtype=np.float64) - ref) / np.maximum(np.abs(ref), atol)))

    rows: list[dict[str, Any]] = []
    import torch

    import torchnde as nde

    f, jac_t = _torch_field(name), _torch_jac(name)
    y0_t = torch.tensor(y0, dtype=torch.float64)
    ts = torch.tensor([0.0, t1], dtype=torch.float64)
    candidates = [
        ("rodas5p (autograd Jacobian, its default)", nde.solvers.Rodas5P()),
        ("rodas5p (analytic Jacobian)", nde.solvers.Rodas5P(jacobian=jac_t)),
        ("rodas5p (finite-difference Jacobian)", nde.solvers.Rodas5P(jacobian="fd")),
        ("kvaerno5 (autograd Jacobian, its default)", nde.solvers.Kvaerno5()),
        ("kvaerno5 (analytic Jacobian)", nde.solvers.Kvaerno5(jacobian=jac_t)),
        ("kvaerno5 (finite-difference Jacobian)", nde.solvers.Kvaerno5(jacobian="fd")),
        ("kvaerno4", nde.solvers.Kvaerno4()),
        ("kvaerno3", nde.solvers.Kvaerno3()),
    ]
    fns: dict[str, Callable[[], Any]] = {}
    for label, solver in candidates:

        def run(s: Any = solver) -> Any:
            with torch.no_grad():
                return nde.solve(f, y0_t, ts, s, rtol=RTOL, atol=atol, max_steps=50_000)

        fns[f"torchnde {label}"] = run
    for method in ("Radau", "BDF", "LSODA"):
        for analytic in (False, True):
            kw = {"jac": jac} if analytic else {}
            how = "analytic Jacobian" if analytic else "finite-difference Jacobian, its default"
            fns[f"scipy {method} ({how})"] = lambda m=method, kw=kw: solve_ivp(
                f_np, (0.0, t1), y0, method=m, rtol=RTOL, atol=atol, **kw
            )
    timed = _timed_or_errors(fns, repeats)
    for label, result in timed.items():
        if isinstance(result, str):
            rows.append({"library": label, "error": result})
            continue
        med, sol = result
        if label.startswith("torchnde"):
            rows.append({"library": label, "time_s": med, "steps": sol.stats.steps, "rejected": sol.stats.rejected,
                         "nfe": sol.stats.nfe, "rel_err": rel(sol.ys[-1].numpy())})  # fmt: skip
        else:
            rows.append({"library": label, "time_s": med, "steps": len(sol.t) - 1, "nfe": sol.nfev,
                         "rel_err": rel(sol.y[:, -1])})  # fmt: skip
    rows.append(_diffrax_row(name, y0, t1, atol, repeats, rel))
    return rows


def _timed_or_errors(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Any]:
    """:func:`_time_interleaved` over the candidates whose warm-up call succeeds; a failing one
    maps to its short error message."""
    working: dict[str, Callable[[], Any]] = {}
    warm: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for label, fn in fns.items():
        try:
            warm[label] = fn()
            working[label] = fn
        except Exception as err:
            errors[label] = short_error(err)
    timed = _time_interleaved(working, repeats, warm)
    return {label: timed[label] if label in timed else errors[label] for label in fns}


def _diffrax_row(
    name: str, y0: list[float], t1: float, atol: float, repeats: int, rel: Callable
) -> dict[str, Any]:
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except Exception as err:
        return {"library": "diffrax Kvaerno5", "error": f"not installed ({short_error(err, 60)})"}
    jax.config.update("jax_enable_x64", True)

    if name == "robertson":

        def vf(t: Any, y: Any, args: Any) -> Any:
            return jnp.stack(
                [
                    -0.04 * y[0] + 1e4 * y[1] * y[2],
                    0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                    3e7 * y[1] ** 2,
                ]
            )
    else:

        def vf(t: Any, y: Any, args: Any) -> Any:
            return jnp.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])

    @jax.jit
    def solve(y: Any) -> Any:
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), diffrax.Kvaerno5(), 0.0, t1, None, y,
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=atol), max_steps=100_000,
        )  # fmt: skip
        return sol.ys, sol.stats

    y = jnp.asarray(y0, dtype=jnp.float64)
    try:
        med, (ys, stats) = _time(lambda: jax.block_until_ready(solve(y)), repeats)
    except Exception as err:
        return {"library": "diffrax Kvaerno5", "error": short_error(err)}
    finally:
        jax.config.update("jax_enable_x64", False)
    return {"library": "diffrax Kvaerno5 (jit, float64)", "time_s": med, "steps": int(stats["num_steps"]),
            "rejected": int(stats["num_rejected_steps"]), "rel_err": rel(np.asarray(ys[-1]))}  # fmt: skip


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "# torchnde stiff benchmarks",
        "",
        f"rtol {RTOL:g} (atol 1e-10 Robertson on [0, 1e5], 1e-8 Van der Pol mu=1000 on [0, 3000]), float64, "
        "one thread; time = median of repeats after a warm-up (jax: after compilation), torchnde and scipy "
        "timed interleaved (diffrax after them); x Radau = time over scipy Radau's (its default "
        "finite-difference Jacobian) in the same run. rel err = max relative error at the end against "
        "scipy Radau at rtol 1e-10.",
        "",
        "| problem | library | time | x Radau | steps | rejected | f evals | rel err |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for problem, rows in results.items():
        radau = next((r["time_s"] for r in rows if r["library"] == RADAU and "time_s" in r), None)
        for i, r in enumerate(rows):
            case = f"`{problem}`" if i == 0 else ""
            if "error" in r:
                lines.append(f"| {case} | {r['library']} | error: {r['error']} | | | | | |")
                continue
            ratio = f"{r['time_s'] / radau:.2f}" if radau else "—"
            lines.append(
                f"| {case} | {r['library']} | {fmt_time(r['time_s'])} | {ratio} | {r['steps']} | "
                f"{r.get('rejected', '—')} | {r.get('nfe', '—')} | {r['rel_err']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stiff", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    configure_threads()
    results = {}
    for name in PROBLEMS:
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = run_problem(name, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stiff.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.out / "stiff.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
