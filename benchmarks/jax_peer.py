"""diffrax (JAX) rows: the same MLP weights in a jit-compiled diffrax solve.

jax is imported lazily, after :func:`benchmarks.common.configure_threads` has set ``XLA_FLAGS``.
Install with ``pip install diffrax jax`` (CPU wheels); without it the rows say so and are skipped.
"""

from __future__ import annotations

from typing import Any

from .common import Candidate, Probe, short_error
from .problems import ATOL, RTOL, Problem

INSTALL_HINT = "pip install diffrax jax"


def diffrax_available() -> str | None:
    """``None`` if diffrax imports, else why not."""
    try:
        import diffrax  # noqa: F401
        import jax  # noqa: F401
    except Exception as err:
        return f"diffrax not importable ({short_error(err, 80)}); {INSTALL_HINT}"
    return None


def versions() -> dict[str, str]:
    try:
        import diffrax
        import jax
    except Exception:
        return {}
    return {"jax": jax.__version__, "diffrax": diffrax.__version__}


def jax_problem(problem: Problem) -> tuple[Any, Any, Any, Any]:
    """The problem in float32 jax: ``(params, vector_field(t, y, params), ts, y0)`` with the
    torch MLP's weights."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", False)
    params = tuple(
        (jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)) for w, b in problem.field.weights()
    )
    n_layers = len(params)

    def vector_field(t: Any, y: Any, args: Any) -> Any:
        h = y
        for i, (w, b) in enumerate(args):
            h = h @ w.T + b
            if i < n_layers - 1:
                h = jnp.tanh(h)
        return h

    ts = jnp.asarray(problem.t_eval.numpy(), jnp.float32)
    return params, vector_field, ts, jnp.asarray(problem.y0.numpy(), jnp.float32)


def diffrax_dopri5_solve(problem: Problem) -> tuple[Any, Any, Any]:
    """``(params, y0, solve)``: ``solve(args, y_init, **options)`` runs diffrax's ``Dopri5`` with
    ``PIDController(RTOL, ATOL)`` and ``SaveAt(ts=t_eval)`` (``options``, e.g. ``adjoint=``, go to
    ``diffeqsolve``) and returns its solution; the caller jits it."""
    import diffrax

    params, vector_field, ts, y0 = jax_problem(problem)
    t0, t1 = float(problem.t_eval[0]), float(problem.t_eval[-1])

    def solve(args: Any, y_init: Any, **options: Any) -> Any:
        return diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field),
            diffrax.Dopri5(),
            t0,
            t1,
            None,
            y_init,
            args=args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            **options,
        )

    return params, y0, solve


def diffrax_dopri5(key: str, label: str, problem: Problem) -> Candidate:
    """diffrax ``Dopri5`` + ``PIDController(rtol, atol)`` (integral control, its default), float32,
    ``SaveAt(ts=t_eval)``, ``dt0=None`` (its initial step selection), the batch as one state."""
    missing = diffrax_available()
    if missing is not None:
        return Candidate(key, label, error=missing)

    import jax
    import numpy as np

    params, y0, dopri5 = diffrax_dopri5_solve(problem)

    @jax.jit
    def solve(args: Any, y_init: Any) -> tuple[Any, dict[str, Any]]:
        sol = dopri5(args, y_init)
        return sol.ys, sol.stats

    def run() -> Any:
        ys, _ = solve(params, y0)
        return ys.block_until_ready()

    def probe() -> Probe:
        ys, stats = solve(params, y0)
        extra = {
            "accepted": int(stats["num_accepted_steps"]),
            "rejected": int(stats["num_rejected_steps"]),
        }
        return Probe(None, None, int(stats["num_steps"]), np.asarray(ys[-1], dtype=np.float64), extra)

    return Candidate(key, label, run=run, probe=probe, note="jit; first call = compile")
