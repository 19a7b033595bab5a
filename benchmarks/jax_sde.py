"""diffrax (JAX) rows of the SDE benchmarks, for reference beside torchsde and torchnde.

- ``gbm``: the same geometric Brownian motion, the batch of 4096 as ``jax.vmap`` over scalar
  solves (diffrax's idiom), float32, ``dt = 2**-8`` with ``ConstantStepSize``, diffrax's
  documented Brownian motion ``VirtualBrownianTree`` (``tol = dt / 2``, made inside the timed
  call from fresh keys), jit-compiled (compilation outside the timing). Its strong error is measured on its own path (``E|y_N - y(1)|`` against the exact
  solution through ``W(1)`` of that path): jax's random numbers differ from torch's.
- ``train``: one training iteration of the same neural SDE (the torch model's initial weights),
  ``jax.value_and_grad`` of the mean square of ``ys`` at the 11 output times, then an Adam step
  (written here: optax is not a dependency), a fresh ``VirtualBrownianTree`` per iteration.
  Gradients: ``backprop`` = diffrax's default ``RecursiveCheckpointAdjoint`` (discretise, then
  differentiate), ``adjoint`` = ``BacksolveAdjoint`` (the continuous adjoint; diffrax documents
  it for Stratonovich solvers only, so an Itô row is refused there).

jax is imported lazily, after :func:`benchmarks.common.configure_threads`. Without it the rows
say why and are skipped.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from .common import Candidate, short_error
from .jax_peer import diffrax_available

SLOW_S = 20.0  # a diffrax iteration slower than this (after compilation) is reported, not timed

# torchnde method name -> diffrax solver class name, per calculus (None: diffrax has no such solver)
SOLVERS = {
    ("euler", "ito"): "Euler",
    ("milstein", "ito"): "ItoMilstein",
    ("milstein", "stratonovich"): "StratonovichMilstein",
    ("midpoint", "stratonovich"): "Midpoint",
    ("heun", "stratonovich"): "Heun",
    ("euler_heun", "stratonovich"): "EulerHeun",
    ("reversible_heun", "stratonovich"): "ReversibleHeun",
}


def _solver(method: str, sde_type: str, options: dict) -> tuple[Any, str | None]:
    """diffrax's solver for a torchsde method, or ``(None, why not)``."""
    name = SOLVERS.get((method, sde_type))
    if name is None or options.get("grad_free"):
        return None, f"diffrax has no {method}{' (derivative-free)' if options else ''} for {sde_type} SDEs"
    import diffrax

    return getattr(diffrax, name)(), None


def gbm_candidate(method: str, sde_type: str, options: dict, mu: float, sigma: float, batch: int,
                  dt: float) -> tuple[Candidate, float | None]:  # fmt: skip
    """The diffrax row of one GBM group and its strong error (``None`` when not run)."""
    missing = diffrax_available()
    if missing is not None:
        return Candidate("diffrax", "diffrax", error=missing), None
    solver, why = _solver(method, sde_type, options)
    if solver is None:
        return Candidate("diffrax", "diffrax", error=why), None
    try:
        run, error = _gbm(solver, sde_type, mu, sigma, batch, dt)
    except Exception as err:  # a diffrax version that refuses the combination
        return Candidate("diffrax", "diffrax", error=short_error(err, 120)), None
    label = f"diffrax {type(solver).__name__} (jit, vmap, VirtualBrownianTree)"
    return Candidate("diffrax", label, run=run, note="jit; first call = compile"), error


def _gbm(solver: Any, sde_type: str, mu: float, sigma: float, batch: int, dt: float) -> tuple[Any, float]:
    """``(run, strong error)``: the batch as ``jax.vmap`` over one-element solves, each with its
    own Brownian motion (diffrax's idiom; one state of ``batch`` elements would make its Milstein
    form the diffusion's full Jacobian)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", False)
    drift_rate = mu if sde_type == "ito" else mu - sigma**2 / 2

    def one(key: Any) -> tuple[Any, Any]:  # one sample: a scalar state driven by a scalar W
        bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=dt / 2, shape=(), key=key)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, args: drift_rate * y),
            diffrax.ControlTerm(lambda t, y, args: sigma * y, bm),
        )
        sol = diffrax.diffeqsolve(terms, solver, 0.0, 1.0, dt, jnp.asarray(1.0, jnp.float32),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=round(1 / dt) + 1)  # fmt: skip
        return sol.ys[-1], bm.evaluate(0.0, 1.0)

    jitted = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(2024), batch)
    y_end, w1 = jitted(keys)
    exact = jnp.exp((mu - sigma**2 / 2) + sigma * w1)
    error = float(jnp.mean(jnp.abs(y_end - exact)))
    rounds = [0]

    def run() -> Any:
        rounds[0] += 1
        return jitted(jax.random.split(jax.random.PRNGKey(rounds[0]), batch))[0].block_until_ready()

    return run, error


def train_candidate(model: torch.nn.Module, method: str, sde_type: str, gradient: str, y0: torch.Tensor,
                    ts: torch.Tensor, dt: float) -> Candidate:  # fmt: skip
    """The diffrax row of one training group: ``model`` is the torch ``DriftDiffusion`` whose
    initial weights it starts from."""
    missing = diffrax_available()
    if missing is not None:
        return Candidate("diffrax", "diffrax", error=missing)
    solver, why = _solver(method, sde_type, {})
    if solver is None:
        return Candidate("diffrax", "diffrax", error=why)
    if gradient == "adjoint_reversible_heun":
        return Candidate("diffrax", "diffrax", error="diffrax 0.7 has no reversible (O(1) memory) adjoint")
    if gradient == "adjoint" and method == "reversible_heun":
        return Candidate("diffrax", "diffrax ReversibleHeun + BacksolveAdjoint",
                         error="not timed: compiling and running one iteration took over 10 minutes here")  # fmt: skip
    if gradient == "adjoint" and sde_type == "ito":
        return Candidate(
            "diffrax", "diffrax", error="diffrax's BacksolveAdjoint supports Stratonovich solvers only"
        )
    try:
        return _train(model, solver, gradient, y0, ts, dt)
    except Exception as err:  # a diffrax version that refuses the combination
        return Candidate("diffrax", "diffrax", error=short_error(err, 120))


def _train(model: torch.nn.Module, solver: Any, gradient: str, y0: torch.Tensor, ts: torch.Tensor,
           dt: float) -> Candidate:  # fmt: skip
    import diffrax
    import jax
    import jax.numpy as jnp
    import lineax

    jax.config.update("jax_enable_x64", False)
    layers = {
        name: [
            (jnp.asarray(m.weight.detach().numpy()), jnp.asarray(m.bias.detach().numpy()))
            for m in seq
            if isinstance(m, torch.nn.Linear)
        ]
        for name, seq in (("drift", model.drift), ("diffusion", model.diffusion))
    }
    batch, state = y0.shape
    y_init = jnp.asarray(y0.numpy()).reshape(-1)
    t_out = jnp.asarray(ts.numpy())

    def mlp(params: list, h: Any, last: Any) -> Any:
        for i, (w, b) in enumerate(params):
            h = h @ w.T + b
            h = jnp.tanh(h) if i < len(params) - 1 else last(h)
        return h

    def loss_fn(params: dict, key: Any) -> Any:
        bm = diffrax.VirtualBrownianTree(
            float(ts[0]), float(ts[-1]), tol=dt / 2, shape=(batch * state,), key=key
        )

        def drift(t: Any, y: Any, args: Any) -> Any:  # the weights come as args (BacksolveAdjoint)
            return mlp(args["drift"], y.reshape(batch, state), lambda h: h).reshape(-1)

        def diffusion(t: Any, y: Any, args: Any) -> Any:
            g = 0.3 * mlp(args["diffusion"], y.reshape(batch, state), jax.nn.sigmoid)
            return lineax.DiagonalLinearOperator(g.reshape(-1))

        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        adjoint = (
            diffrax.BacksolveAdjoint() if gradient == "adjoint" else diffrax.RecursiveCheckpointAdjoint()
        )
        n_steps = math.ceil(float(ts[-1] - ts[0]) / dt) + 2
        sol = diffrax.diffeqsolve(terms, solver, float(ts[0]), float(ts[-1]), dt, y_init,
                                  args=params, saveat=diffrax.SaveAt(ts=t_out), adjoint=adjoint,
                                  max_steps=n_steps)  # fmt: skip
        return jnp.mean(sol.ys**2)

    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8

    @jax.jit
    def step(params: dict, moments: tuple, count: Any, key: Any) -> tuple:
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        m, v = moments
        m = jax.tree_util.tree_map(lambda a, g: b1 * a + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda a, g: b2 * a + (1 - b2) * g * g, v, grads)
        count = count + 1
        scale = lr * jnp.sqrt(1 - b2**count) / (1 - b1**count)
        params = jax.tree_util.tree_map(lambda p, a, b: p - scale * a / (jnp.sqrt(b) + eps), params, m, v)
        return params, (m, v), count, loss

    zeros = jax.tree_util.tree_map(jnp.zeros_like, layers)
    carry = [layers, (zeros, zeros), jnp.asarray(0.0)]
    keys = iter(jax.random.split(jax.random.PRNGKey(7), 100_000))

    def run() -> float:
        params, moments, count, loss = step(*carry, next(keys))
        carry[:] = [params, moments, count]
        return float(loss)  # blocks until ready

    run()  # compile
    adjoint = "BacksolveAdjoint" if gradient == "adjoint" else "RecursiveCheckpointAdjoint"
    label = f"diffrax {type(solver).__name__} + {adjoint} (jit)"
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    if seconds > SLOW_S:  # timing it as often as the others would take the benchmark hours
        return Candidate(
            "diffrax", label, error=f"not timed: one iteration took {seconds:.0f} s (> {SLOW_S:.0f} s)"
        )
    return Candidate("diffrax", label, run=run, note="jit; first call = compile")
