"""ODERNN: a GRU whose hidden state follows a neural ODE between irregular observations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models import ODERNN

HIDDEN, CHANNELS = 3, 2


def _rnn(dtype=torch.float64, seed=0, **options) -> ODERNN:
    torch.manual_seed(seed)
    options.setdefault("solver", "rk4")
    options.setdefault("dt", 0.1)
    field = nn.Sequential(nn.Linear(HIDDEN, 4), nn.Tanh(), nn.Linear(4, HIDDEN))
    return ODERNN(field, nn.GRUCell(2 * CHANNELS, HIDDEN), readout=nn.Linear(HIDDEN, CHANNELS), **options).to(
        dtype
    )


def _series(batch=3, length=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    times = torch.cat(
        [torch.zeros(1), torch.rand(length - 1, generator=gen).sort().values + 0.05 * torch.arange(1, length)]
    )
    values = torch.randn(batch, length, CHANNELS, generator=gen)
    mask = torch.rand(batch, length, CHANNELS, generator=gen) > 0.3
    return times.to(dtype), values.to(dtype), mask


def test_states_are_batch_first_and_the_final_state_is_the_last_update():
    rnn = _rnn()
    times, values, mask = _series()
    run = rnn.states(times, values, mask)
    assert run.before.shape == run.after.shape == (3, 5, HIDDEN)
    assert torch.equal(run.final, run.after[:, -1])
    assert torch.equal(run.before[:, 0], torch.zeros(3, HIDDEN, dtype=torch.float64))
    assert torch.equal(rnn(times, values, mask), run.final)


def test_the_state_between_observations_is_the_ode_solution_and_the_update_is_the_gru_cell():
    rnn = _rnn()
    times, values, mask = _series(length=3)
    run = rnn.states(times, values, mask)
    carried = nde.solve(lambda t, h: rnn.field(h), run.after[:, 0], times[:2], solver="rk4", dt=0.1).ys[-1]
    assert torch.allclose(run.before[:, 1], carried, atol=1e-14)
    inputs = torch.cat([torch.where(mask[:, 1], values[:, 1], 0.0), mask[:, 1].double()], -1)
    expected = rnn.cell(inputs, carried)
    rows = mask[:, 1].any(-1)
    assert torch.allclose(run.after[rows, 1], expected[rows], atol=1e-14)


def test_a_masked_value_does_not_change_the_output_even_if_it_is_nan():
    rnn = _rnn()
    times, values, mask = _series()
    changed = torch.where(mask, values, torch.full_like(values, float("nan")))
    assert torch.equal(rnn(times, values, mask), rnn(times, changed, mask))
    assert torch.equal(rnn.one_step(times, values, mask), rnn.one_step(times, changed, mask))


def test_a_wholly_missing_time_point_leaves_the_state_as_if_it_were_absent():
    rnn = _rnn(solver="dopri5", dt=None, rtol=1e-10, atol=1e-12)
    times, values, mask = _series()
    mask[:, 2] = False
    keep = [0, 1, 3, 4]
    full = rnn(times, values, mask)
    dropped = rnn(times[keep], values[:, keep], mask[:, keep])
    assert torch.allclose(full, dropped, atol=1e-9)


def test_a_time_point_mask_broadcasts_over_the_channels():
    rnn = _rnn()
    times, values, mask = _series()
    points = mask.any(-1)
    assert torch.equal(rnn(times, values, points), rnn(times, values, points.unsqueeze(-1).expand_as(values)))


def test_per_sample_times_give_the_same_states_as_the_shared_grid():
    rnn = _rnn()
    times, values, mask = _series()
    shared = rnn(times, values, mask)
    per_sample = rnn(times.expand(3, -1), values, mask)
    assert torch.allclose(shared, per_sample, atol=1e-12)


def test_padding_a_shorter_series_by_repeating_its_last_time_changes_nothing():
    rnn = _rnn()
    times, values, mask = _series(batch=2)
    rows = torch.stack([times, times])
    rows[1, 3:] = rows[1, 2]  # sample 1 has three points, padded to five
    padded_mask = mask.clone()
    padded_mask[1, 3:] = False
    padded = rnn(rows, values, padded_mask)
    alone = rnn(times[:3], values[1:, :3], mask[1:, :3])
    assert torch.allclose(padded[1], alone[0], atol=1e-12)


def test_a_backwards_run_visits_the_times_in_reverse():
    rnn = _rnn()
    times, values, mask = _series()
    back = rnn.states(times, values, mask, reverse=True)
    assert torch.equal(back.final, back.after[:, 0])
    assert torch.equal(back.before[:, -1], torch.zeros(3, HIDDEN, dtype=torch.float64))
    carried = nde.solve(lambda t, h: rnn.field(h), back.after[:, 4], times[[4, 3]], solver="rk4", dt=0.1).ys[
        -1
    ]
    assert torch.allclose(back.before[:, 3], carried, atol=1e-14)


def test_t_end_carries_the_final_state_on_by_the_ode():
    rnn = _rnn()
    times, values, mask = _series()
    run = rnn.states(times, values, mask, t_end=float(times[-1]) + 0.3)
    expected = nde.solve(
        lambda t, h: rnn.field(h),
        run.after[:, -1],
        torch.stack([times[-1], times[-1] + 0.3]),
        solver="rk4",
        dt=0.1,
    ).ys[-1]
    assert torch.allclose(run.final, expected, atol=1e-14)


def test_predict_reads_out_the_state_carried_past_the_last_observation():
    rnn = _rnn()
    times, values, mask = _series()
    query = times[-1] + torch.tensor([0.2, 0.5])
    out = rnn.predict(times, values, mask, query)
    assert out.shape == (3, 2, CHANNELS)
    at_last = rnn.predict(times, values, mask, torch.cat([times[-1:], query]))
    assert torch.allclose(at_last[:, 0], rnn.readout(rnn(times, values, mask)), atol=1e-14)
    assert torch.allclose(at_last[:, 1:], out, atol=1e-12)
    h = rnn(times, values, mask, t_end=float(query[1]))
    assert torch.allclose(out[:, 1], rnn.readout(h), atol=1e-12)
    assert rnn.one_step(times, values, mask).shape == (3, 5, CHANNELS)


def test_gradients_to_values_times_state_and_weights_match_finite_differences_in_float64():
    rnn = _rnn()
    times, values, mask = _series(batch=2, length=3)

    def run(t, v, h0, w):
        return torch.func.functional_call(rnn, {"field.0.weight": w}, (t, v, mask), {"h0": h0})

    inputs = (
        times.expand(2, -1).clone().requires_grad_(),  # per-sample times: the rescaled solves
        values.requires_grad_(),
        torch.randn(2, HIDDEN, dtype=torch.float64, requires_grad=True),
        rnn.field[0].weight.detach().clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(run, inputs, fast_mode=True)
    assert torch.autograd.gradcheck(lambda v: rnn(times, v, mask), (values,), fast_mode=True)


def _parameter_gradient(rnn: ODERNN, times, values, mask) -> torch.Tensor:
    rnn.zero_grad()
    rnn(times, values, mask, t_end=float(times[-1]) + 0.2).pow(2).sum().backward()
    return torch.cat([p.grad.reshape(-1) for p in rnn.parameters() if p.grad is not None])


@pytest.mark.parametrize(
    ("solver", "gradient", "tolerance"),
    [
        ("rk4", "checkpoint", 1e-12),
        ("dopri5", "adjoint", 1e-6),
        ("reversible_heun", "reversible", 1e-10),
    ],
)
def test_every_gradient_strategy_gives_the_backprop_gradient(solver, gradient, tolerance):
    times, values, mask = _series(batch=2, length=4)
    steps = {"dt": 0.05} if solver != "dopri5" else {"rtol": 1e-10, "atol": 1e-12}
    reference = _parameter_gradient(_rnn(solver=solver, **steps), times, values, mask)
    other = _parameter_gradient(_rnn(solver=solver, gradient=gradient, **steps), times, values, mask)
    assert reference.abs().max() > 1e-3
    assert torch.allclose(other, reference, atol=tolerance, rtol=tolerance)


def test_the_adjoint_differentiates_only_the_field_and_the_cell_still_learns():
    rnn = _rnn(solver="dopri5", dt=None, rtol=1e-8, atol=1e-10, gradient="adjoint")
    times, values, mask = _series()
    rnn(times, values, mask).sum().backward()
    assert rnn.cell.weight_ih.grad.abs().sum() > 0
    assert rnn.field[0].weight.grad.abs().sum() > 0


def test_a_cell_of_the_wrong_input_size_is_an_error_naming_the_size():
    rnn = ODERNN(nn.Linear(3, 3), nn.GRUCell(6, 3))
    times, values, mask = _series()
    with pytest.raises(ValueError, match="needs input size 4"):
        rnn(times, values.float(), mask)
    with pytest.raises(ValueError, match="2 \\* channels"):
        ODERNN(nn.Linear(3, 3), nn.GRUCell(5, 3))
    with pytest.raises(TypeError, match="GRUCell"):
        ODERNN(nn.Linear(3, 3), nn.Linear(4, 3))


def test_bad_times_and_masks_are_errors_that_name_the_fix():
    rnn = _rnn()
    times, values, mask = _series()
    with pytest.raises(ValueError, match="strictly increasing"):
        rnn(times.flip(0), values, mask)
    with pytest.raises(ValueError, match="mask must be"):
        rnn(times, values, mask[:, :, :1].squeeze(-1)[:, :3])
    rows = times.expand(3, -1).clone()
    rows[0, 2] = rows[0, 1]
    with pytest.raises(ValueError, match="must be fully masked"):
        rnn(rows, values, torch.ones_like(mask))
    with pytest.raises(ValueError, match="batch, time, channels"):
        rnn(times, values[0], mask[0])
    with pytest.raises(ValueError, match="readout"):
        ODERNN(nn.Linear(3, 3), nn.GRUCell(4, 3)).double().one_step(times, values, mask)
    with pytest.raises(ValueError, match="h0 must be"):
        rnn(times, values, mask, h0=torch.zeros(3, HIDDEN + 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="unknown option"):
        _rnn(stepsize=0.1)
