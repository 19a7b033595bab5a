"""The torchsde drop-in's ``sdeint(adaptive=True, rtol, atol, dt_min)``: the same steps,
decisions and solution as torchsde 0.2.6 on the same Brownian path, a warning with the count
where steps are taken at ``dt_min``, and a refused ``BrownianPath``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchsde as oracle

import torchnde as nde
import torchnde.compat.torchsde as torchsde

from .sde_helpers import DTYPE, LinearBrownian, SharedBrownian, SmallSDE, bm_shape, small_y0

TS = torch.linspace(0, 1, 5, dtype=DTYPE)
CASES = [
    ("euler", "diagonal", "ito"),
    ("euler", "general", "ito"),
    ("milstein", "scalar", "ito"),
    ("srk", "diagonal", "ito"),
    ("srk", "additive", "ito"),
    ("heun", "diagonal", "stratonovich"),
    ("midpoint", "general", "stratonovich"),
    ("euler_heun", "diagonal", "stratonovich"),
    ("reversible_heun", "diagonal", "stratonovich"),
    ("milstein", "diagonal", "stratonovich"),
]


@pytest.mark.filterwarnings("ignore:Numerical solution is not guaranteed")  # torchsde's, for euler
@pytest.mark.parametrize(("method", "noise", "calculus"), CASES)
def test_adaptive_steps_agree_with_torchsde_on_the_same_path(method, noise, calculus):
    """A path linear between 32 grid points: continuous in time, so the last-bit differences
    between the two libraries' step ends (their arithmetic differs in rounding) change the
    increments by rounding only, and both take the same steps."""
    sde = SmallSDE(noise, calculus)
    bm = LinearBrownian(bm_shape(noise), seed=3, levels=5)
    with torch.no_grad():
        ours = torchsde.sdeint(sde, small_y0(), TS, bm=bm, method=method, dt=0.1, adaptive=True, rtol=1e-3,
                               atol=1e-4)  # fmt: skip
        want = oracle.sdeint(sde, small_y0(), TS, bm=SharedBrownian(bm), method=method, dt=0.1, adaptive=True,
                             rtol=1e-3, atol=1e-4)  # fmt: skip
    assert torch.allclose(ours, want, rtol=0, atol=1e-8)


def test_the_adaptive_solution_is_as_accurate_as_torchsdes_on_a_brownian_interval():
    """On a BrownianInterval the two libraries' step ends part in the last bits and the paths
    inside the leaves then differ, so the solutions agree in accuracy, not to rounding."""
    sde = SmallSDE("diagonal", "stratonovich")
    bm = nde.BrownianInterval(0.0, 1.0, bm_shape("diagonal"), dtype=DTYPE, seed=7, levy_area=True)
    with torch.no_grad():
        reference = torchsde.sdeint(sde, small_y0(), TS, bm=bm, method="heun", dt=2**-12)
        ours = torchsde.sdeint(sde, small_y0(), TS, bm=bm, method="heun", dt=0.1, adaptive=True, rtol=1e-4,
                               atol=1e-4)  # fmt: skip
        want = oracle.sdeint(sde, small_y0(), TS, bm=SharedBrownian(bm), method="heun", dt=0.1, adaptive=True,
                             rtol=1e-4, atol=1e-4)  # fmt: skip
    ours_error = (ours - reference).abs().mean().item()
    their_error = (want - reference).abs().mean().item()
    assert 0.5 < ours_error / their_error < 2, (ours_error, their_error)


@pytest.mark.filterwarnings("ignore:Numerical solution is not guaranteed")
def test_steps_at_dt_min_are_accepted_with_one_warning_giving_their_count():
    sde = SmallSDE("diagonal", "ito")
    bm = nde.BrownianInterval(0.0, 1.0, bm_shape("diagonal"), dtype=DTYPE, seed=8, levy_area=True)
    with pytest.warns(
        RuntimeWarning, match=r"\d+ step\(s\) were accepted at the minimum step size dtmin=0.02"
    ) as seen:
        ys = torchsde.sdeint(sde, small_y0(), TS, bm=bm, method="euler", dt=0.1, adaptive=True, rtol=1e-9,
                             atol=1e-9, dt_min=0.02)  # fmt: skip
    assert len(seen) == 1 and bool(torch.isfinite(ys).all())
    with pytest.warns(UserWarning, match="Hitting minimum allowed step size"):  # torchsde warns per step
        oracle.sdeint(sde, small_y0(), TS, bm=SharedBrownian(bm), method="euler", dt=0.1, adaptive=True,
                      rtol=1e-9, atol=1e-9, dt_min=0.02)  # fmt: skip


def test_a_brownian_path_is_refused_for_adaptive_steps_and_the_default_is_an_interval():
    sde = SmallSDE("diagonal", "stratonovich")
    path = torchsde.BrownianPath(0.0, torch.zeros(bm_shape("diagonal"), dtype=DTYPE))
    with pytest.raises(ValueError, match=r"build a BrownianInterval.*instead of a BrownianPath"):
        torchsde.sdeint(sde, small_y0(), TS, bm=path, method="heun", adaptive=True)
    runs = []
    for _ in range(2):
        np.random.seed(0)  # the default path's seed comes from numpy's generator, as torchsde's
        runs.append(torchsde.sdeint(sde, small_y0(), TS, method="heun", adaptive=True, rtol=1e-3, atol=1e-3))
    assert torch.equal(runs[0], runs[1])
    with pytest.raises(ValueError, match="dt_min must be a positive float"):
        torchsde.sdeint(sde, small_y0(), TS, method="heun", adaptive=True, dt_min=0.0)
    with pytest.raises(NotImplementedError, match=r"adjoint_reversible_heun.* fixed grid"):
        torchsde.sdeint_adjoint(sde, small_y0(), TS, method="reversible_heun", adaptive=True)
