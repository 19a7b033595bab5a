"""Ensembles across ranks (``torchnde.distributed``): rows split in contiguous blocks, each block
solved per sample, the blocks gathered in order; the result equals one process's solve.

The two-rank check spawns two gloo processes (``torch.multiprocessing.spawn``, about 6 s of CPU,
most of it two interpreters importing torch); the rest runs in this process.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torchnde as nde
from torchnde import distributed
from torchnde.experiments._checkpoint import read_checkpoint, rng_states, write_checkpoint

N = 10_000


def _van_der_pol(mu: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, mu * (1 - x * x) * v - x], dim=-1)


def _ensemble() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """10,000 Van der Pol oscillators: random starts and damping (a sweep over both)."""
    g = torch.Generator().manual_seed(0)
    y0 = torch.randn(N, 2, dtype=torch.float64, generator=g)
    mu = 2 * torch.rand(N, dtype=torch.float64, generator=g)
    return y0, mu, torch.linspace(0, 2, 5, dtype=torch.float64)


def _solve_ensemble(throw: bool = True) -> nde.Solution:
    y0, mu, ts = _ensemble()
    return distributed.ensemble_solve(
        None,
        y0,
        ts,
        "dopri5",
        rtol=1e-6,
        atol=1e-8,
        field_for_rows=lambda rows: functools.partial(_van_der_pol, mu[rows]),
        throw=throw,
    )


M = 2_000  # SDE paths: geometric Brownian motion, one motion for the whole ensemble


def _gbm_paths(blocks: list[slice] | None = None) -> torch.Tensor:
    """``M`` paths of dX = 0.1 X dt + 0.2 X dW driven by rows of one seeded motion: by
    ``ensemble_solve`` (each rank's block), or block by block in this process (``blocks``)."""
    bm = nde.BrownianInterval(0.0, 1.0, (M, 1), dtype=torch.float64, seed=11)
    x0, ts = torch.ones(M, 1, dtype=torch.float64), torch.linspace(0, 1, 5, dtype=torch.float64)

    def term(rows: slice) -> nde.SDETerm:
        return nde.SDETerm(lambda t, y: 0.1 * y, lambda t, y: 0.2 * y, "diagonal", brownian=bm.rows(rows))

    if blocks is None:
        return distributed.ensemble_solve(None, x0, ts, "euler", dt=0.02, field_for_rows=term).ys
    parts = [nde.solve(term(b), x0[b], ts, "euler", dt=0.02, per_sample=True).ys for b in blocks]
    return torch.cat(parts, dim=1)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rows = distributed.shard_rows(N)
        sol = _solve_ensemble()
        odd = torch.arange(14.0).reshape(7, 2)  # blocks of 4 and 3 rows, padded for the collective
        uneven = distributed.gather(distributed.shard(odd), 7)
        gbm = _gbm_paths()
        if rank == 0:
            torch.save({"ys": sol.ys, "steps": sol.stats.steps, "nfe": sol.stats.nfe, "gbm": gbm,
                        "status": sol.status, "rows": (rows.start, rows.stop), "uneven": uneven}, out)  # fmt: skip
        else:
            torch.save({"rows": (rows.start, rows.stop)}, out + ".1")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ten_thousand_per_sample_solves_sharded_over_two_ranks_equal_one_process(tmp_path):
    out = str(tmp_path / "ensemble.pt")
    mp.spawn(_rank_main, args=(2, _free_port(), out), nprocs=2, join=True)
    shared = torch.load(out, weights_only=True)
    alone = _solve_ensemble()
    assert shared["rows"] == (0, 5000) and torch.load(out + ".1", weights_only=True)["rows"] == (5000, N)
    assert shared["ys"].shape == alone.ys.shape == (5, N, 2)
    torch.testing.assert_close(shared["ys"], alone.ys, rtol=0, atol=1e-12)
    assert torch.equal(shared["steps"], alone.stats.steps) and torch.equal(shared["nfe"], alone.stats.nfe)
    assert torch.equal(shared["status"], torch.zeros(N, dtype=torch.int64))
    assert torch.equal(shared["uneven"], torch.arange(14.0).reshape(7, 2))
    assert torch.equal(shared["gbm"], _gbm_paths([slice(0, M)]))  # SDE paths: the same noise per row
    assert 10 < float(alone.stats.steps.double().mean()) < 40  # the samples did take different steps
    assert int(alone.stats.steps.min()) < int(alone.stats.steps.max())


def test_sde_paths_driven_by_rows_of_one_motion_do_not_depend_on_the_split():
    whole = _gbm_paths([slice(0, M)])
    assert torch.equal(_gbm_paths([slice(0, 700), slice(700, M)]), whole)
    assert torch.equal(_gbm_paths([slice(0, 1), slice(1, 1500), slice(1500, M)]), whole)
    assert torch.equal(_gbm_paths(), whole)  # ensemble_solve in one process
    mean = float(whole[-1].mean())  # E X(1) = e^0.1, std of the mean about 0.005
    assert abs(mean - 1.1052) < 0.02


def test_rows_of_a_motion_are_checked():
    bm = nde.BrownianPath(0.0, (4, 1), dtype=torch.float64, seed=0)
    with pytest.raises(TypeError, match="slice"):
        bm.rows(2)
    with pytest.raises(TypeError, match="step 1"):
        bm.rows(slice(0, 4, 2))
    with pytest.raises(ValueError, match="empty"):
        bm.rows(slice(3, 3))
    with pytest.raises(ValueError, match="scalar"):
        nde.BrownianPath(0.0, (), seed=0).rows(slice(0, 1))
    assert bm.rows(slice(1, None)).shape == (3, 1) and not bm.rows(slice(0, 2)).any_order


def test_shard_rows_splits_contiguously_and_the_blocks_cover_every_row_once():
    for n, world in [(10, 4), (10_000, 2), (7, 7), (5, 3), (0, 2)]:
        blocks = [distributed.shard_rows(n, r, world) for r in range(world)]
        assert [i for b in blocks for i in range(b.start, b.stop)] == list(range(n))
        sizes = [b.stop - b.start for b in blocks]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert distributed.shard_rows(10, 1, 4) == slice(3, 6)


def test_shard_rows_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="need 0 <= rank < world"):
        distributed.shard_rows(10, 2, 2)


def test_one_process_is_rank_zero_of_one_and_its_shard_and_gather_are_the_identity():
    x = torch.arange(12.0).reshape(4, 3)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard(x) is not None and torch.equal(distributed.shard(x), x)
    assert distributed.gather(x, 4) is x
    with distributed.process_group() as world:
        assert world == 1 and not dist.is_initialized()


def test_process_group_refuses_an_unknown_backend():
    with (
        pytest.raises(ValueError, match="'gloo' \\(CPU\\), 'nccl' \\(CUDA\\)"),
        distributed.process_group("tcp"),
    ):
        pass


def test_in_one_process_the_ensemble_is_the_per_sample_solve():
    y0, mu, ts = _ensemble()
    rows = slice(0, 300)
    sol = distributed.ensemble_solve(
        functools.partial(_van_der_pol, mu[rows]), y0[rows], ts, "dopri5", rtol=1e-6, atol=1e-8
    )
    ref = nde.solve(
        functools.partial(_van_der_pol, mu[rows]),
        y0[rows],
        ts,
        "dopri5",
        rtol=1e-6,
        atol=1e-8,
        per_sample=True,
    )
    assert torch.equal(sol.ys, ref.ys) and torch.equal(sol.stats.steps, ref.stats.steps)
    assert not sol.ys.requires_grad


def test_a_parameter_sweep_matches_the_closed_form():
    rates = torch.linspace(0.5, 2.0, 64, dtype=torch.float64)
    sol = distributed.ensemble_solve(
        None,
        torch.ones(64, 1, dtype=torch.float64),
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        "dopri5",
        rtol=1e-10,
        atol=1e-12,
        field_for_rows=lambda rows: lambda t, y: -rates[rows].unsqueeze(-1) * y,
    )
    torch.testing.assert_close(sol.ys[-1, :, 0], torch.exp(-rates), rtol=1e-8, atol=0)


def test_a_failed_sample_is_raised_with_its_index_or_returned_with_throw_false():
    y0 = torch.tensor([[0.1], [0.2], [1.0], [0.3]], dtype=torch.float64)
    ts = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with pytest.raises(nde.MaxStepsReached, match=r"ensemble sample 2 stopped.*throw=False"):
        distributed.ensemble_solve(lambda t, y: y**2, y0, ts, max_steps=40)  # sample 2 blows up at t = 1
    sol = distributed.ensemble_solve(lambda t, y: y**2, y0, ts, max_steps=40, throw=False)
    assert sol.status.tolist() == [0, 0, int(nde.Status.MAX_STEPS), 0]


@pytest.mark.parametrize("option", ["dense", "save_steps", "per_sample", "gradient"])
def test_options_that_give_ragged_or_per_process_results_are_refused(option):
    with pytest.raises(TypeError, match=f"does not take {option}.*distributed.shard"):
        distributed.ensemble_solve(
            lambda t, y: -y, torch.ones(4, 1), torch.tensor([0.0, 1.0]), **{option: True}
        )


def test_exactly_one_of_f_and_field_for_rows_is_needed():
    with pytest.raises(TypeError, match="exactly one of f"):
        distributed.ensemble_solve(None, torch.ones(4, 1), torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="pack a tuple state"):
        distributed.ensemble_solve(lambda t, y: y, (torch.ones(4, 1),), torch.tensor([0.0, 1.0]))


def test_rank_seeds_keep_rank_zero_and_do_not_collide():
    seeds = {distributed.rank_seed(s, r) for s in range(20) for r in range(8)}
    assert len(seeds) == 160 and distributed.rank_seed(5, 0) == 5


def test_a_checkpoint_with_every_ranks_generators_restores_the_given_ranks(tmp_path: Path):
    model = torch.nn.Linear(2, 2)
    config = {"experiment": "toy", "tier": "quick", "seed": 0, "tag": "fit", "steps": 1}
    torch.manual_seed(1)
    rank0 = rng_states()
    torch.manual_seed(2)
    rank1 = rng_states()
    path = tmp_path / "fit.pt"
    write_checkpoint(path, config, 1, [], {"model": model}, rng=[rank0, rank1])
    read_checkpoint(path, config, {"model": model}, rank=1)
    torch.manual_seed(2)
    expected = torch.rand(3)
    read_checkpoint(path, config, {"model": model}, rank=1)
    assert torch.equal(torch.rand(3), expected)
