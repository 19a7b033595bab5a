"""Training across processes: ``examples/ddp_neural_ode.py`` (a neural ODE, DistributedDataParallel,
the experiments' trainer) under ``torchrun --nproc_per_node=2`` on CPU (gloo) ends with the
parameters of one process trained on the same global batches.

About 14 s of CPU: torchrun and its two ranks each import torch; the one-process run is in this
process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchnde.experiments import _framework
from torchnde.experiments._checkpoint import CheckpointError, read_checkpoint, rng_states, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ddp_neural_ode.py"


def _one_process(out: Path) -> None:
    """The example's main() in this process (its experiment unregistered afterwards)."""
    spec = importlib.util.spec_from_file_location("ddp_neural_ode_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    _framework.names()  # every experiment registered first, so that restoring keeps them
    registered = dict(_framework._REGISTRY)
    try:
        spec.loader.exec_module(module)
        assert module.main(["--out", str(out)]) == 0
    finally:
        _framework._REGISTRY.clear()
        _framework._REGISTRY.update(registered)


def _torchrun(out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(EXAMPLE), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
def test_two_ranks_under_torchrun_end_with_one_process_parameters_after_twenty_steps(tmp_path):
    done = _torchrun(tmp_path / "two")
    _one_process(tmp_path / "one")
    two = torch.load(tmp_path / "two" / "checkpoints" / "fit.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoints" / "fit.pt", weights_only=True)
    assert two["step"] == one["step"] == 20
    assert set(two["state"]["model"]) == set(one["state"]["model"])  # no "module." prefix
    for name, value in one["state"]["model"].items():
        torch.testing.assert_close(two["state"]["model"][name], value, rtol=0, atol=1e-6)
    moved = max(float((v - two["state"]["model"][k]).abs().max()) for k, v in _initial().items())
    assert moved > 1e-2  # twenty Adam steps did move the parameters
    # the loss each step is the global batch's: the mean of the two ranks' halves
    losses = [h["loss"] for h in one["history"]]
    torch.testing.assert_close([h["loss"] for h in two["history"]], losses, rtol=1e-9, atol=0)
    assert losses[-1] < 0.5 * losses[0]
    # rank 0 alone printed, and wrote the report and the checkpoint (with both ranks' generators)
    assert done.stdout.count("training fit: 20 steps") == 1
    assert isinstance(two["rng"], list) and len(two["rng"]) == 2 and two["config"]["world_size"] == 2
    assert not torch.equal(two["rng"][0]["torch"], two["rng"][1]["torch"])  # each rank its own seed
    doc = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert doc["passed"] and doc["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoints",
        "metrics.json",
        "report.md",
    ]


def _initial() -> dict[str, torch.Tensor]:
    """The example model's parameters before training (seed 0), to show that training moved them."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 32, dtype=torch.float64),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 2, dtype=torch.float64),
    )
    return {f"net.{k}": v for k, v in net.state_dict().items()}


def test_one_process_reports_its_own_numbers_unaveraged():
    info = {"loss": 0.25, "nfe": 7, "ok": True, "name": "x"}
    assert _framework._mean_over_ranks(info) is info


def test_in_one_process_ddp_returns_the_model_and_shard_the_whole_batch(tmp_path):
    run = _framework.Run(tmp_path)
    model = torch.nn.Linear(2, 2)
    batch = torch.arange(10.0)
    assert run.ddp(model) is model and not run.sharded
    assert (run.rank, run.world_size) == (0, 1) and torch.equal(run.shard(batch), batch)


def test_a_checkpoint_of_two_ranks_is_refused_by_one_process_and_by_three_ranks(tmp_path):
    model = torch.nn.Linear(2, 2)
    config = {"experiment": "toy", "tier": "quick", "seed": 0, "tag": "fit", "steps": 1}
    path = tmp_path / "fit.pt"
    write_checkpoint(path, {**config, "world_size": 2}, 1, [], {"model": model}, rng=[rng_states()] * 2)
    with pytest.raises(CheckpointError, match="written for world_size 2, this run has none"):
        read_checkpoint(path, config, {"model": model})
    with pytest.raises(CheckpointError, match="written for world_size 2, this run has 3"):
        read_checkpoint(path, {**config, "world_size": 3}, {"model": model}, rank=2)
    assert read_checkpoint(path, {**config, "world_size": 2}, {"model": model}, rank=1)["step"] == 1
