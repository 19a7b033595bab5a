"""The GPU path: both layouts (one step size for the batch, and ``per_sample=True``) solve on a
CUDA device, give the CPU's answer, and synchronise the host at most once per step.

Skipped without CUDA. Synchronisations are counted two ways: every host read of a tensor's value
(``item``, ``float``, ``bool``, ``int``, ``tolist``: the calls ``tests/test_sync.py`` counts on the
CPU), and every operation CUDA itself reports as synchronising (``torch.cuda.set_sync_debug_mode
("warn")`` warns once per synchronising call: a device-to-host copy, ``nonzero``, a boolean mask).
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

import torchnde as nde

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

_READS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__")
# Reads outside the loop, as in tests/test_sync.py: t_eval's check, y0's finiteness check,
# the initial step's three norms, one final check.
_SETUP = 6


def _field(t, y):
    return torch.sin(t) * y - 0.5 * y**3


def _problem(device):
    y0 = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(device)
    return y0, torch.linspace(0, 5, 11, dtype=torch.float64, device=device)


class _Syncs:
    """``reads``: host reads of tensor values; ``cuda``: calls CUDA reports as synchronising."""

    def __init__(self, caught: list) -> None:
        self.reads = 0
        self._caught = caught

    @property
    def cuda(self) -> int:
        return sum("synchroniz" in str(w.message).lower() for w in self._caught)


@contextlib.contextmanager
def _counting():
    torch.cuda.synchronize()  # (before counting: an explicit synchronize is reported too)
    with warnings.catch_warnings(record=True) as caught, pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("always")
        syncs = _Syncs(caught)
        for name in _READS:
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, **kwargs):
                syncs.reads += 1
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, counted)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield syncs
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("per_sample", [False, True], ids=["batch", "per_sample"])
def test_both_layouts_solve_on_cuda_with_the_cpus_answer(per_sample):
    y0, ts = _problem("cuda")
    sol = nde.solve(_field, y0, ts, "dopri5", rtol=1e-8, atol=1e-10, per_sample=per_sample)
    assert sol.ys.device.type == "cuda" and sol.ys.shape == (11, 64, 3)
    ref = nde.solve(_field, y0.cpu(), ts.cpu(), "dopri5", rtol=1e-8, atol=1e-10, per_sample=per_sample)
    # CUDA's and the CPU's sin and pow differ in the last bits: a step decision on the edge may
    # flip, so the answers agree to the tolerance and the step counts to a step or two
    torch.testing.assert_close(sol.ys.cpu(), ref.ys, rtol=1e-6, atol=1e-8)
    diff = torch.as_tensor(sol.stats.steps).cpu() - torch.as_tensor(ref.stats.steps)
    assert int(diff.abs().max()) <= 2


def _steps(sol) -> int:
    return int(torch.as_tensor(sol.stats.steps).max())  # (read after the count)


@pytest.mark.parametrize("per_sample", [False, True], ids=["batch", "per_sample"])
def test_a_solve_on_cuda_synchronises_at_most_once_per_step(per_sample):
    """Two solves of one problem at a loose and a tight tolerance: the tight one's extra steps
    may add at most one synchronisation each (whatever the fixed costs of the set-up and the
    outputs), and the host reads stay within tests/test_sync.py's CPU bound (per sample, plus one
    each time finished samples leave the batch: at most log2(64) = 6 times)."""
    y0, ts = _problem("cuda")
    if per_sample:  # every sample its own end time, so that samples finish apart
        ts = torch.linspace(1.0, 5.0, 64, dtype=torch.float64, device="cuda")[:, None] * torch.linspace(
            0, 1, 11, dtype=torch.float64, device="cuda"
        )
    counts, steps = [], []
    for rtol in (1e-5, 1e-9):
        with _counting() as syncs:
            sol = nde.solve(_field, y0, ts, "dopri5", rtol=rtol, atol=rtol * 1e-2, per_sample=per_sample)
            reads, cuda = syncs.reads, syncs.cuda
        counts.append((reads, cuda))
        steps.append(_steps(sol))
    assert steps[1] > steps[0] + 10
    compactions = 6 if per_sample else 0  # (their number may differ between the two solves)
    assert counts[1][0] <= steps[1] + _SETUP + compactions
    assert counts[1][0] - counts[0][0] <= steps[1] - steps[0] + compactions
    assert 0 < counts[1][1] - counts[0][1] <= steps[1] - steps[0] + compactions
