r"""The MNIST table of Chen et al. (2018): an MLP, a ResNet, an RK-Net and an ODE-Net on real digits,
with test error, parameters, measured memory and time per epoch beside the paper's column.

R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, *Neural Ordinary Differential
Equations*, NeurIPS 2018, arXiv 1806.07366, Sec. 3, Table 1: on MNIST a one-hidden-layer MLP
has 1.60% test error (0.24M parameters), a ResNet of six residual blocks 0.41% (0.60M, memory
O(L)), an RK-Net (the block's function stepped by Runge–Kutta, backprop through the steps) 0.47%
(0.22M, O(L~)) and an ODE-Net (one ODE block, the adjoint) 0.42% (0.22M, memory O(1)).

The set-up (the architectures of torchdiffeq's MNIST example, which the paper's numbers come
from): downsampling, a 3x3 convolution to 64 channels then two stride-2 4x4 convolutions with
GroupNorm (28x28 -> 6x6); the body; a head of GroupNorm, ReLU, average pooling and a linear map
to 10 classes. The bodies:

- ResNet: six residual blocks ``h + conv(ReLU(GN(conv(ReLU(GN(h))))))`` (3x3, 64 channels);
- RK-Net: :class:`~torchnde.models.ConvODEField` (the block's two convolutions, each also seeing
  the time as a channel) integrated over ``[0, 1]`` by RK4 with step 0.5 (two steps, eight
  evaluations), differentiated by backprop through the solver;
- ODE-Net: the same field over ``[0, 1]`` by dopri5 at ``rtol = atol = 1e-3`` (the example's
  tolerance), gradients by the continuous adjoint;
- MLP: 784 -> 300 -> 10 with ReLU (the paper's 0.24M).

Data: ``mnist-10k`` (:func:`torchnde.datasets.mnist_idx`; 10,000 real MNIST digits, the first
8,000 for training and the last 2,000 for testing). Full tier: every digit; Adam (lr 1e-3,
cosine decay to 0), batches of 32, 4 epochs (20 for the MLP), the same seeded order of digits for
every model, no augmentation (the paper trains for far longer, with random crops, on 60,000
digits). Quick tier: the first 32 training digits, four full-batch gradient-descent steps a
model (lr 0.5; the first Adam steps of these GroupNorm networks do not reliably lower the loss),
100 test digits.

Memory, for one training step (cross-entropy of a batch, then ``backward``), measured by
:func:`torchnde.graph_memory`: the bytes the autograd graph holds after the forward pass and
the peak allocated during the backward pass, at two depths: ResNet 6 and 12 blocks, RK-Net and
ODE-Net integrated to ``t = 1`` and ``t = 2`` (twice the RK4 steps; dopri5 chooses its own).
The downsampling layers' activations are held at both depths, so a body whose memory doubles
moves the total by less than 2x.

Criteria: the ODE-Net's test error on the 2,000 test digits at most 3% (full tier); each
model's parameter count within 10% of the paper's; the ODE-Net's held bytes the same at both
depths and the ResNet's and RK-Net's at least 1.2 times larger at the double depth. The quick
tier checks that training lowers each model's loss on its 32 digits by at least 2% instead of
the test error.

Full tier, seed 0 (43 minutes on one thread of a loaded 2-core machine): test error ODE-Net
2.65%, ResNet 2.55%, RK-Net 2.60%, MLP 4.45% (the paper: 0.42%, 0.41%, 0.47%, 1.60% after far
longer training on 60,000 digits); parameters 208,266 / 576,778 / 208,266 / 238,510; graph bytes
held after a training step's forward pass (32 digits), depth 1 -> 2: ODE-Net 14.4 -> 14.4 MiB
(dopri5: 32 and 38 evaluations), ResNet 20.6 -> 27.5 MiB, RK-Net 30.1 -> 46.1 MiB; backward
peaks 20.0, 0.6 and 1.7 MiB at both depths (the adjoint's backward solve allocates more than the
ODE-Net holds). Seed 1 (12 minutes, at a lighter load) passes every check: test error
ODE-Net 2.70%, ResNet 2.80%, RK-Net 3.00%, MLP 4.50%. Quick tier, seeds 0-4: every check
passes; the convolutional models' loss falls by 8.6-14.4%.

```python
from torchnde.experiments import run_experiment
doc = run_experiment("mnist-table", quick=True, out="/tmp/mnist-table")   # needs mnist-10k
print(doc["passed"], doc["metrics"]["parameters"])
```
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import torchnde as nde
from torchnde.datasets import LabelledImages, mnist_idx
from torchnde.models import ConvODEField, NeuralODE, group_norm

from ._framework import Run, experiment

__all__: list[str] = []

MODELS = ("mlp", "resnet", "rknet", "odenet")
TRAINING_ORDER = ("odenet", "resnet", "rknet", "mlp")  # the criterion's model first
LABELS = {"mlp": "1-layer MLP", "resnet": "ResNet", "rknet": "RK-Net", "odenet": "ODE-Net"}
# Chen et al. 2018, Table 1: test error (%), parameters (millions), memory
PAPER = {
    "mlp": (1.60, 0.24, "-"),
    "resnet": (0.41, 0.60, "O(L)"),
    "rknet": (0.47, 0.22, "O(L~)"),
    "odenet": (0.42, 0.22, "O(1)"),
}
CHANNELS = 64
RK_STEP = 0.5
ODE_TOL = 1e-3


class ResBlock(nn.Module):
    """``h + conv2(ReLU(GN(conv1(ReLU(GN(h))))))``: the pre-activation residual block (3x3
    convolutions without bias, 64 channels) of the paper's ResNet."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(torch.relu(self.norm2(self.conv1(torch.relu(self.norm1(h))))))


def downsampling(channels: int = CHANNELS) -> nn.Sequential:
    """``[B, 1, 28, 28] -> [B, 64, 6, 6]``: a 3x3 convolution, then two stride-2 4x4 ones, with
    GroupNorm and ReLU between."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, 1),
        group_norm(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 4, 2, 1),
        group_norm(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 4, 2, 1),
    )


def head(channels: int = CHANNELS) -> nn.Sequential:
    """GroupNorm, ReLU, global average pooling, a linear map to the 10 classes."""
    return nn.Sequential(
        group_norm(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)
    )


def build(name: str, depth: int = 1) -> nn.Module:
    """The model ``name`` (one of :data:`MODELS`) at ``depth`` times its body: ``6 * depth``
    residual blocks, or the ODE integrated over ``[0, depth]`` (the RK-Net with the same step)."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    if name == "resnet":
        body: nn.Module = nn.Sequential(*[ResBlock() for _ in range(6 * depth)])
    elif name == "rknet":
        body = NeuralODE(ConvODEField(CHANNELS), solver="rk4", dt=RK_STEP, t_span=(0.0, float(depth)))
    elif name == "odenet":
        body = NeuralODE(
            ConvODEField(CHANNELS),
            solver="dopri5",
            rtol=ODE_TOL,
            atol=ODE_TOL,
            gradient="adjoint",
            t_span=(0.0, float(depth)),
        )
    else:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return nn.Sequential(downsampling(), body, head())


def parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class _Recipe:
    train: int  # training digits used (the first ones)
    test: int  # test digits scored (the first ones of the test split)
    epochs: int
    batch: int
    lr: float
    optimizer: str  # "adam", or "sgd" (plain gradient descent)
    memory_batch: int
    mlp_epochs: int


def _train(run: Run, name: str, model: nn.Module, data: LabelledImages, recipe: _Recipe) -> dict[str, Any]:
    """Adam (or gradient descent) with cosine decay over seeded epochs; the loss history and
    seconds per epoch."""
    epochs = recipe.mlp_epochs if name == "mlp" else recipe.epochs
    n = len(data.labels)
    per_epoch = math.ceil(n / recipe.batch)
    steps = epochs * per_epoch
    optimizer = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.SGD
    opt = optimizer(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    ode = model[1] if isinstance(model, nn.Sequential) and isinstance(model[1], NeuralODE) else None

    def step(i: int) -> dict[str, Any]:
        epoch, k = divmod(i, per_epoch)
        order = torch.randperm(n, generator=run.generator(100 + epoch))  # the same for every model
        index = order[k * recipe.batch : (k + 1) * recipe.batch]
        loss = nn.functional.cross_entropy(model(data.images[index]), data.labels[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        info: dict[str, Any] = {"loss": loss.item()}
        if ode is not None:
            info["nfe"] = int(ode.nfe)
        return info

    history = run.train(name, step, steps, {"model": model, "opt": opt, "sched": sched}, every=50)
    # the stage's own time, also when it was resumed or reused from a checkpoint
    return {"history": history, "seconds_per_epoch": run.train_seconds[name] / epochs, "epochs": epochs}


def _loss(model: nn.Module, data: LabelledImages) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(data.images), data.labels))


def _test_error(model: nn.Module, data: LabelledImages, batch: int = 500) -> float:
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(data.labels), batch):
            logits = model(data.images[i : i + batch])
            wrong += int((logits.argmax(-1) != data.labels[i : i + batch]).sum())
    return 100.0 * wrong / len(data.labels)


def memory(name: str, depth: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
    """Bytes held by the graph after one training step's forward pass and the peak during its
    backward pass, for a freshly built ``name`` at ``depth`` (the weights do not change them)."""
    torch.manual_seed(0)
    model = build(name, depth)
    loss: Callable[[], torch.Tensor] = lambda: nn.functional.cross_entropy(model(x), y)  # noqa: E731
    loss().backward()  # one-off allocations (gradient buffers) are not counted
    mem = nde.graph_memory(loss, lambda value: value.backward())
    out = {"held_bytes": mem.retained_bytes, "backward_peak_bytes": int(mem.backward_peak_bytes or 0)}
    body = model[1]
    if isinstance(body, NeuralODE):
        out["forward_nfe"] = int(body.nfe)
    return out


def _table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | test error (paper) | test error (ours) | parameters (paper) | parameters (ours) "
        "| memory (paper) | held after forward, depth 1 -> 2 (ours) | backward peak, depth 1 -> 2 (ours) "
        "| time per epoch (ours) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        r = rows[name]
        error, params, mem = PAPER[name]
        lines.append(
            f"| {LABELS[name]} | {error:.2f}% | {r['test_error']:.2f}% | {params:.2f}M | {r['parameters'] / 1e6:.3f}M "
            f"| {mem} | {r['held']} | {r['peak']} | {r['seconds_per_epoch']:.1f} s |"
        )
    return "\n".join(lines)


def _mib(a: int, b: int) -> str:
    return f"{a / 2**20:.2f} -> {b / 2**20:.2f} MiB"


@experiment(
    "mnist-table",
    title="MNIST: MLP, ResNet, RK-Net and ODE-Net, test error, parameters and measured memory",
    paper="Chen, Rubanova, Bettencourt, Duvenaud, Neural ordinary differential equations, NeurIPS 2018, "
    "arXiv 1806.07366, Sec. 3, Table 1",
    claim="ODE-Net: 0.42% test error with 0.22M parameters and O(1) memory, against a ResNet's 0.41% (0.60M, "
    "O(L)), an RK-Net's 0.47% (0.22M, O(L~)) and an MLP's 1.60% (0.24M)",
)
def run_mnist_table(run: Run) -> None:
    """Train the four models, score them, count their parameters and measure their memory."""
    recipe = run.pick(
        # the quick tier: four full-batch gradient-descent steps on 32 digits (the first Adam steps
        # of these GroupNorm networks do not reliably lower the loss: ratios 0.94-1.03 over seeds)
        _Recipe(
            train=32, test=100, epochs=4, batch=32, lr=0.5, optimizer="sgd", memory_batch=4, mlp_epochs=4
        ),
        _Recipe(
            train=8000,
            test=2000,
            epochs=4,
            batch=32,
            lr=1e-3,
            optimizer="adam",
            memory_batch=32,
            mlp_epochs=20,
        ),
    )
    train, test = mnist_idx(split="train"), mnist_idx(split="test")
    train = LabelledImages(train.images[: recipe.train], train.labels[: recipe.train])
    test = LabelledImages(test.images[: recipe.test], test.labels[: recipe.test])
    probe = LabelledImages(train.images[:32], train.labels[:32])
    run.note(
        f"mnist-10k: {len(train.labels)} training and {len(test.labels)} test digits. "
        f"{'Adam' if recipe.optimizer == 'adam' else 'Gradient descent'}, lr {recipe.lr}, "
        f"cosine decay, batches of {recipe.batch}, {recipe.epochs} epochs ({recipe.mlp_epochs} for the MLP), "
        f"the same seeded order of digits for every model. RK-Net: RK4, step {RK_STEP}, backprop; ODE-Net: "
        f"dopri5, rtol = atol = {ODE_TOL}, adjoint. Memory: one training step on {recipe.memory_batch} digits. "
        "Times are wall-clock on one thread of a shared machine."
    )
    rows: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    x, y = train.images[: recipe.memory_batch], train.labels[: recipe.memory_batch]
    for name in TRAINING_ORDER:
        torch.manual_seed(run.seed)
        model = build(name)
        before = _loss(model, probe)
        trained = _train(run, name, model, train, recipe)
        histories[name] = trained["history"]
        row: dict[str, Any] = {
            "parameters": parameters(model),
            "probe_loss_before": before,
            "probe_loss_after": _loss(model, probe),
            "test_error": _test_error(model, test),
            "seconds_per_epoch": trained["seconds_per_epoch"],
            "epochs": trained["epochs"],
        }
        if name == "mlp":
            row["held"] = row["peak"] = "-"
        else:
            row["memory"] = {depth: memory(name, depth, x, y) for depth in (1, 2)}
            held = [row["memory"][d]["held_bytes"] for d in (1, 2)]
            peak = [row["memory"][d]["backward_peak_bytes"] for d in (1, 2)]
            row["held"], row["peak"] = _mib(*held), _mib(*peak)
            row["held_ratio"] = held[1] / held[0]
        run.say(
            f"{LABELS[name]}: test error {row['test_error']:.2f}%, loss on {len(probe.labels)} training digits "
            f"{before:.4f} -> {row['probe_loss_after']:.4f}, {row['seconds_per_epoch']:.1f} s per epoch"
        )
        if name == "odenet":
            row["training_nfe_mean"] = sum(h["nfe"] for h in histories[name]) / len(histories[name])
        rows[name] = row
    run.metric(
        "models",
        {k: {key: v for key, v in r.items() if key not in ("held", "peak")} for k, r in rows.items()},
    )
    run.metric("parameters", {k: r["parameters"] for k, r in rows.items()})
    run.metric("test_error_percent", {k: r["test_error"] for k, r in rows.items()})
    run.section("Table 1 beside ours", _table(rows))
    _checks(run, rows)
    _figure(run, histories, rows)


def _checks(run: Run, rows: dict[str, dict[str, Any]]) -> None:
    if run.quick:
        for name in MODELS:
            r = rows[name]
            run.check(
                f"{LABELS[name]}: loss on the 32 training digits after / before training",
                r["probe_loss_after"] / r["probe_loss_before"],
                "<=",
                0.98,
            )
    else:
        run.check(
            "ODE-Net test error on the 2,000 test digits (%)",
            rows["odenet"]["test_error"],
            "<=",
            3.0,
            claim="0.42%",
        )
    for name in MODELS:
        paper = PAPER[name][1] * 1e6
        run.check(
            f"{LABELS[name]}: parameters / paper's {PAPER[name][1]:.2f}M, distance from 1",
            abs(rows[name]["parameters"] / paper - 1.0),
            "<=",
            0.10,
            claim=f"{PAPER[name][1]:.2f}M",
        )
    run.check(
        "ODE-Net: graph bytes held after forward, depth 2 / depth 1",
        rows["odenet"]["held_ratio"],
        "<=",
        1.0,
        claim="O(1) memory",
    )
    for name in ("resnet", "rknet"):
        run.check(
            f"{LABELS[name]}: graph bytes held after forward, depth 2 / depth 1",
            rows[name]["held_ratio"],
            ">=",
            1.2,
            claim=PAPER[name][2] + " memory",
        )


def _figure(run: Run, histories: dict[str, list[dict[str, Any]]], rows: dict[str, dict[str, Any]]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in MODELS:
        losses = [h["loss"] for h in histories[name]]
        per_epoch = len(losses) / rows[name]["epochs"]
        axes[0].plot([(i + 1) / per_epoch for i in range(len(losses))], losses, lw=0.6, label=LABELS[name])
    axes[0].set_xlim(0, rows["odenet"]["epochs"])  # the MLP's further epochs are left out
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training cross-entropy")
    axes[0].legend(fontsize=8)
    names = [n for n in MODELS if n != "mlp"]
    width = 0.38
    for k, depth in enumerate((1, 2)):
        values = [rows[n]["memory"][depth]["held_bytes"] / 2**20 for n in names]
        axes[1].bar([i + (k - 0.5) * width for i in range(len(names))], values, width, label=f"depth {depth}")
    axes[1].set_xticks(range(len(names)), [LABELS[n] for n in names])
    axes[1].set_xlabel("model")
    axes[1].set_ylabel("graph memory held after forward (MiB)")
    axes[1].legend(fontsize=8)
    run.figure(
        "mnist_table",
        fig,
        "Left: training loss of each step against the epochs (the MLP's later epochs not shown). Right: bytes the autograd graph holds after one training step's "
        "forward pass at depth 1 and 2 (ResNet: 6 and 12 blocks; RK-Net and ODE-Net: integrated to t = 1 "
        "and t = 2).",
    )
