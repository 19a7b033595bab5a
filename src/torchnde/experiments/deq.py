r"""A deep equilibrium classifier on scikit-learn's 8x8 digits, against the weight-tied network
it is the limit of.

S. Bai, J. Z. Kolter, V. Koltun, *Deep equilibrium models*, NeurIPS 2019, arXiv 1909.01377: a
DEQ reaches the accuracy of the weight-tied deep network at constant memory, its gradient taken
by the implicit function theorem. The paper's sequence models (WikiText-103, PTB) are not CPU
feasible; ``deq-digits`` is a small CPU substitute: 1,797 digits (8x8, 64
features scaled to [0, 1]), a seeded stratified split of 1,297 training and 500 test digits, and

- the DEQ: :math:`z^* = f(z^*, x) = \tanh(W z^* + U x + b)` (hidden width ``h``), ``W`` scaled to
  spectral norm at most 0.9 (so ``f`` is a contraction and the equilibrium exists), a linear
  read-out, Anderson acceleration forward and backward, a one-probe Jacobian penalty (Bai et al.,
  ICML 2021);
- the weight-tied network: the same ``f`` and read-out from the same initialisation, unrolled for
  ``L`` layers from ``z = 0`` and trained by backprop through every layer.

Criteria: on the test digits the DEQ's equilibrium has a relative
residual :math:`\lVert f(z)-z\rVert/\lVert f(z)\rVert` of at most 1e-4 (largest over the
digits); the implicit gradient of the trained model's loss has a cosine of at least 0.99 with the
gradient backpropagated through 200 unrolled iterations; the bytes the autograd graph holds after
the forward pass (:func:`torchnde.graph_memory`) do not change with the number of forward
iterations (forced by a damped iteration with an unreachable tolerance), while the unrolled
network's grow; and the DEQ's test accuracy is within 2 points of the weight-tied network's.

```python
from torchnde.experiments import run_experiment
doc = run_experiment("deq-digits", quick=True, out="/tmp/deq-digits")   # needs scikit-learn
print(doc["passed"], [c["measured"] for c in doc["checks"]])
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import torchnde as nde
from torchnde.models import DEQ
from torchnde.solvers import FixedPoint, relative_residual

from .._optional import require
from ._framework import Run, experiment

__all__: list[str] = []


@dataclass(frozen=True)
class Digits:
    """The split: ``x`` ``[N, 64]`` in [0, 1], ``y`` ``[N]``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(seed: int, n_test: int = 500) -> Digits:
    """scikit-learn's 8x8 digits, features scaled to [0, 1], split stratified by class with a
    seeded permutation: ``n_test`` test digits (in proportion to each class), the rest training."""
    sk_datasets = require(
        "sklearn.datasets", extra="experiments", purpose="the deq-digits experiment (8x8 digits)"
    )
    data = sk_datasets.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    test = []
    for c in range(10):
        members = torch.nonzero(y == c).squeeze(1)
        members = members[torch.randperm(len(members), generator=gen)]
        test.append(members[: round(n_test * len(members) / len(y))])
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return Digits(x[~is_test], y[~is_test], x[is_test], y[is_test])


class EquilibriumLayer(nn.Module):
    """``f(z, x) = tanh(W z + U x + b)`` with ``W = V min(1, bound / ||V||_2)``: tanh is
    1-Lipschitz, so ``f`` is a contraction in ``z`` with constant at most ``bound`` (``< 1``),
    whatever the training does to ``V``."""

    def __init__(self, features: int, hidden: int, bound: float = 0.9) -> None:
        super().__init__()
        self.V = nn.Parameter(torch.randn(hidden, hidden) * 0.5 / hidden**0.5)
        self.U = nn.Linear(features, hidden)
        self.bound = bound

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        W = self.V * (self.bound / torch.linalg.matrix_norm(self.V, 2)).clamp(max=1.0)
        return torch.tanh(z @ W.T + self.U(x))


class Classifier(nn.Module):
    """The layer's equilibrium (``depth=None``) or ``depth`` unrolled layers, then a read-out."""

    def __init__(
        self, features: int, hidden: int, depth: int | None, solver: FixedPoint, probes: int
    ) -> None:
        super().__init__()
        self.deq = DEQ(
            EquilibriumLayer(features, hidden), state_shape=(hidden,), solver=solver, jacobian_probes=probes
        )
        self.readout = nn.Linear(hidden, 10)
        self.depth = depth

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.deq(x) if self.depth is None else self.deq.unroll(x, self.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


@dataclass(frozen=True)
class _Recipe:
    steps: int
    batch: int
    lr: float
    hidden: int
    depth: int  # the weight-tied network's layers
    jacobian_weight: float
    memory_iterations: tuple[int, ...]


def _train(
    run: Run, tag: str, model: Classifier, data: Digits, recipe: _Recipe
) -> tuple[list[dict[str, Any]], float]:
    """Adam with a cosine schedule on seeded minibatches; the DEQ adds its Jacobian penalty."""
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
    gen = run.generator(17)  # the same minibatches for both models
    n = len(data.y_train)

    def step(i: int) -> dict[str, Any]:
        index = torch.randperm(n, generator=gen)[: recipe.batch]
        loss = nn.functional.cross_entropy(model(data.x_train[index]), data.y_train[index])
        info: dict[str, Any] = {"loss": loss.item()}
        if model.depth is None:
            info.update(iterations=model.deq.result.iterations, residual=model.deq.result.residual)
            if model.deq.jacobian_loss is not None:
                loss = loss + recipe.jacobian_weight * model.deq.jacobian_loss
        opt.zero_grad()
        loss.backward()
        if model.depth is None and model.deq.backward_result is not None:
            info["backward_iterations"] = model.deq.backward_result.iterations
        opt.step()
        sched.step()
        return info

    history = run.train(tag, step, recipe.steps, {"model": model, "opt": opt, "sched": sched, "gen": gen})
    return history, run.train_seconds[tag]


def _accuracy(model: Classifier, data: Digits) -> float:
    with torch.no_grad():
        return float((model(data.x_test).argmax(-1) == data.y_test).double().mean()) * 100


def _flat_grads(model: Classifier, loss: Callable[[], torch.Tensor]) -> torch.Tensor:
    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def _gradient_cosine(model: Classifier, data: Digits, steps: int) -> tuple[float, float]:
    """Cosine and relative difference between the implicit gradient of the training loss (on 256
    training digits) and the one backpropagated through ``steps`` unrolled iterations."""
    x, y = data.x_train[:256], data.y_train[:256]
    probes, model.deq.jacobian_probes = model.deq.jacobian_probes, 0
    try:
        implicit = _flat_grads(model, lambda: nn.functional.cross_entropy(model.readout(model.deq(x)), y))
        unrolled = _flat_grads(
            model, lambda: nn.functional.cross_entropy(model.readout(model.deq.unroll(x, steps)), y)
        )
    finally:
        model.deq.jacobian_probes = probes
    cosine = float(nn.functional.cosine_similarity(implicit, unrolled, dim=0))
    return cosine, float((implicit - unrolled).norm() / unrolled.norm())


def _held_bytes(model: Classifier, x: torch.Tensor, iterations: tuple[int, ...]) -> dict[str, dict[int, int]]:
    """Bytes the graph holds after the forward pass: the DEQ forced to ``n`` evaluations (damped
    iteration, unreachable tolerance) and the weight-tied network of ``n`` layers."""
    deq = model.deq
    saved = deq.solver, deq.jacobian_probes
    held: dict[str, dict[int, int]] = {"deq": {}, "unrolled": {}}
    try:
        deq.jacobian_probes = 0
        for n in iterations:
            deq.solver = FixedPoint("damped", tol=1e-30, max_iter=n, fallback=None, on_failure="ignore")
            deq(x)  # one-off allocations are not counted
            held["deq"][n] = nde.graph_memory(lambda: deq(x)).retained_bytes
            if deq.result.iterations != n:
                raise RuntimeError(f"the forced solve took {deq.result.iterations} evaluations, not {n}")
            held["unrolled"][n] = nde.graph_memory(lambda n=n: deq.unroll(x, n)).retained_bytes
    finally:
        deq.solver, deq.jacobian_probes = saved
    return held


def _solver_histories(model: Classifier, x: torch.Tensor) -> dict[str, list[float]]:
    """The largest relative residual after each evaluation, per method, on the test digits."""
    out = {}
    for method in ("anderson", "broyden", "damped"):
        solver = FixedPoint(method, tol=1e-7, max_iter=150, fallback=None, on_failure="ignore")
        with torch.no_grad():
            result = solver.solve(lambda z: model.deq.f(z, x), model.deq.initial_state(x))
        out[method] = list(result.history)
    return out


@experiment(
    "deq-digits",
    title="Deep equilibrium classifier on 8x8 digits: implicit gradients at constant memory",
    paper="Bai, Kolter, Koltun, Deep equilibrium models, NeurIPS 2019, arXiv 1909.01377",
    claim="a DEQ matches the weight-tied deep network it is the limit of, with gradients by the implicit "
    "function theorem at memory independent of the forward iterations (up to 88% less memory on WT103)",
)
def run_deq_digits(run: Run) -> None:
    """Train the DEQ and the weight-tied network; measure residual, gradient, memory, accuracy."""
    recipe = run.pick(
        _Recipe(
            steps=120, batch=128, lr=1e-2, hidden=48, depth=12, jacobian_weight=0.5, memory_iterations=(5, 20)
        ),
        _Recipe(
            steps=1500,
            batch=128,
            lr=5e-3,
            hidden=96,
            depth=30,
            jacobian_weight=0.5,
            memory_iterations=(10, 50, 200),
        ),
    )
    data = load_digits_split(run.seed)
    solver = FixedPoint("anderson", tol=1e-5, max_iter=60, on_failure="ignore")
    run.note(
        f"sklearn digits: {len(data.y_train)} training / {len(data.y_test)} test (stratified, seed {run.seed}). "
        f"f(z, x) = tanh(W z + U x + b), ||W||_2 <= 0.9, hidden {recipe.hidden}, linear read-out. DEQ: Anderson (memory 5, "
        f"tol 1e-5 relative, at most 60 evaluations, damped fallback) forward and for the adjoint, one-probe "
        f"Jacobian penalty x {recipe.jacobian_weight}. Weight-tied network: the same f unrolled {recipe.depth} "
        f"layers from z = 0, backprop. Both: Adam lr {recipe.lr}, cosine schedule, {recipe.steps} steps of "
        f"{recipe.batch}, the same initialisation and minibatches."
    )
    models: dict[str, Classifier] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for name, depth in (("deq", None), ("unrolled", recipe.depth)):
        torch.manual_seed(run.seed)
        models[name] = Classifier(64, recipe.hidden, depth, solver, probes=1 if depth is None else 0)
        histories[name], spent = _train(run, name, models[name], data, recipe)
        seconds[name] = round(spent, 2)
    deq = models["deq"]
    accuracy = {name: _accuracy(model, data) for name, model in models.items()}
    with torch.no_grad():
        z = deq.deq(data.x_test)
        residual = float(relative_residual(deq.deq.f(z, data.x_test), z).max())
    test_iterations = deq.deq.result.iterations
    cosine, gradient_error = _gradient_cosine(deq, data, 200)
    held = _held_bytes(deq, data.x_test[:32], recipe.memory_iterations)
    first, last = recipe.memory_iterations[0], recipe.memory_iterations[-1]
    run.metric("test_accuracy_percent", accuracy)
    run.metric("test_relative_residual_max", residual)
    run.metric("test_forward_evaluations", test_iterations)
    run.metric("gradient_cosine_implicit_vs_200_unrolled", cosine)
    run.metric("gradient_relative_difference", gradient_error)
    run.metric("graph_bytes_held_after_forward", held)
    run.metric("train_seconds", seconds)
    run.metric(
        "training_forward_evaluations_mean",
        sum(h["iterations"] for h in histories["deq"]) / len(histories["deq"]),
    )
    run.check("largest relative residual of the test equilibria", residual, "<=", 1e-4)
    run.check(
        "cosine of the implicit gradient with the 200-step unrolled gradient (trained model)",
        cosine,
        ">=",
        0.99,
    )
    run.check(
        f"DEQ graph bytes held after forward, {last} / {first} forward evaluations",
        held["deq"][last] / held["deq"][first],
        "<=",
        1.0,
        claim="memory independent of the forward iterations [V]",
    )
    run.check(
        "test accuracy difference, DEQ vs weight-tied network (points, absolute)",
        abs(accuracy["deq"] - accuracy["unrolled"]),
        "<=",
        2.0,
    )
    _figure(run, histories, held, _solver_histories(deq, data.x_test))


def _figure(
    run: Run,
    histories: dict[str, list[dict[str, Any]]],
    held: dict[str, dict[int, int]],
    solver_histories: dict[str, list[float]],
) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, label in (("deq", "DEQ (implicit gradient)"), ("unrolled", "weight-tied, unrolled")):
        axes[0].plot([h["loss"] for h in histories[name]], lw=1, label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("training cross-entropy")
    axes[0].legend(fontsize=8)
    for method, values in solver_histories.items():
        axes[1].semilogy(range(1, len(values) + 1), values, label=method)
    axes[1].axhline(1e-4, color="grey", ls="--", lw=0.8, label="criterion 1e-4")
    axes[1].set_xlabel("evaluations of f")
    axes[1].set_ylabel("largest relative residual (test digits)")
    axes[1].legend(fontsize=8)
    for name, marker, label in (("deq", "o", "DEQ"), ("unrolled", "s", "weight-tied, unrolled")):
        n = list(held[name])
        axes[2].plot(n, [held[name][k] / 1024 for k in n], marker=marker, label=label)
    axes[2].set_xlabel("forward iterations / layers")
    axes[2].set_ylabel("graph memory held after forward (KiB)")
    axes[2].legend(fontsize=8)
    run.figure(
        "deq_digits",
        fig,
        "Left: training loss of the DEQ and of the weight-tied network. Middle: the trained layer's "
        "equilibrium on the test digits by each root-finder. Right: bytes the autograd graph holds "
        "after the forward pass against the number of forward iterations (DEQ: forced by an "
        "unreachable tolerance) or layers.",
    )
