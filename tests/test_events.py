"""Events: zero crossings located on the continuous extension, terminal stops, jumps (a
bouncing ball with analytic bounce times), and event times differentiated by the implicit
function theorem."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde
from torchnde.compat.torchdiffeq import odeint_event

G = 9.81


def _ball(t, y):
    return y[1], -G * torch.ones_like(y[1])


def _bounces(h: float, e: float, n: int) -> list[float]:
    t = math.sqrt(2 * h / G)
    v = G * t
    times = [t]
    for _ in range(n - 1):
        v *= e
        t += 2 * v / G
        times.append(t)
    return times


def _bounce(e: float = 0.9) -> nde.Event:
    return nde.Event(
        lambda t, y: y[0].sum(), terminal=False, direction=-1, jump=lambda t, y: (y[0], -e * y[1])
    )


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "dopri8"])
def test_bouncing_ball_event_times_match_the_analytic_ones(solver):
    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    ts = torch.linspace(0, 4, 41, dtype=torch.float64)
    sol = nde.solve(_ball, y0, ts, solver, rtol=1e-10, atol=1e-12, event=_bounce())
    want = _bounces(1.0, 0.9, len(sol.event_ts))
    assert len(want) >= 5
    assert max(abs(float(a) - b) for a, b in zip(sol.event_ts, want)) < 1e-8
    assert float(sol.ys[0].min()) > -1e-9  # never below the floor
    # at the bounces the velocity flips with restitution 0.9
    v_before = -G * torch.tensor(want[0], dtype=torch.float64)
    assert torch.allclose(sol.event_ys[1][0], v_before, atol=1e-8)


def test_bounce_time_derivatives_match_the_analytic_ones():
    h = torch.tensor([1.3], dtype=torch.float64, requires_grad=True)
    y0 = (h, torch.zeros(1, dtype=torch.float64))
    sol = nde.solve(_ball, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), "tsit5", rtol=1e-10, atol=1e-12,
                    event=_bounce(0.8))  # fmt: skip
    first, second = torch.autograd.grad(sol.event_ts[:2].sum(), h)[0], None
    # t1 = sqrt(2h/g): dt1/dh = 1/sqrt(2 g h); t2 = t1 (1 + 2e): dt2/dh = (1 + 2e) dt1/dh
    dt1 = 1 / math.sqrt(2 * G * 1.3)
    assert abs(float(first) - dt1 * (1 + (1 + 2 * 0.8))) < 1e-8
    (second,) = torch.autograd.grad(
        nde.solve(_ball, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), "tsit5", rtol=1e-10, atol=1e-12,
                  event=_bounce(0.8)).event_ts[0], h)  # fmt: skip
    assert abs(float(second) - dt1) < 1e-10


def test_event_time_passes_gradcheck_through_a_parameter():
    def outputs(k, y0):
        def f(t, y):
            return -k * y + 1.0

        event = nde.Event(lambda t, y: y.sum() - 1.2)
        sol = nde.solve(f, y0, torch.tensor([0.0, 10.0], dtype=torch.float64), "dopri5", rtol=1e-11, atol=1e-13,
                        event=event)  # fmt: skip
        return sol.event_ts, sol.event_ys

    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(outputs, (k, y0), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_a_terminal_event_ends_the_outputs():
    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    ts = torch.linspace(0, 1, 11, dtype=torch.float64)
    sol = nde.solve(_ball, y0, ts, event=nde.Event(lambda t, y: y[0].sum()))
    t_hit = math.sqrt(2 / G)
    assert abs(float(sol.event_ts[0]) - t_hit) < 1e-8
    after = ts > t_hit
    assert torch.isnan(sol.ys[0][after]).all() and not torch.isnan(sol.ys[0][~after]).any()
    assert sol.status == nde.Status.EVENT and sol.success  # stopped at the event: a normal outcome


def test_direction_filters_crossings():
    """sin(t) crosses zero rising at 2 pi and falling at pi: only the watched one fires."""
    y0 = torch.zeros(1, dtype=torch.float64)
    ts = torch.tensor([0.0, 7.0], dtype=torch.float64)

    def f(t, y):
        return torch.cos(t).expand_as(y)

    for direction, want in ((1, 2 * math.pi), (-1, math.pi)):
        event = nde.Event(lambda t, y: y.sum() + 0.0 * t, direction=direction)
        sol = nde.solve(f, y0 + 1e-3 * direction, ts, "dopri8", rtol=1e-11, atol=1e-13, event=event)
        # y = sin t + offset: the crossing of the offset curve is near the bare one
        assert abs(float(sol.event_ts[0]) - want) < 2e-3


def test_per_sample_balls_bounce_independently():
    heights = [1.0, 2.0, 0.5]
    h = torch.tensor([[x] for x in heights], dtype=torch.float64, requires_grad=True)
    v = torch.zeros(3, 1, dtype=torch.float64)
    ts = torch.linspace(0, 3, 31, dtype=torch.float64)
    event = nde.Event(lambda t, y: y[0].sum(-1), terminal=False, direction=-1,
                      jump=lambda t, y: (y[0], -0.9 * y[1]))  # fmt: skip
    sol = nde.solve(_ball, (h, v), ts, "tsit5", rtol=1e-10, atol=1e-12, per_sample=True, event=event)
    assert sol.event_ts.shape[0] == 3
    for i, h0 in enumerate(heights):
        fired = sol.event_ts[i][~torch.isnan(sol.event_ts[i])]
        want = _bounces(h0, 0.9, len(fired))
        assert len(fired) >= 3 and max(abs(float(a) - b) for a, b in zip(fired, want)) < 1e-8
        alone = nde.solve(_ball, (h[i].detach(), v[i]), ts, "tsit5", rtol=1e-10, atol=1e-12, event=event)
        assert torch.allclose(alone.event_ts, fired.detach(), rtol=0, atol=1e-10)
    (grad,) = torch.autograd.grad(sol.event_ts[:, 0].sum(), h)
    want = torch.tensor([1 / math.sqrt(2 * G * x) for x in heights], dtype=torch.float64)
    assert torch.allclose(grad.flatten(), want, rtol=1e-8)


def test_per_sample_terminal_events_stop_each_sample():
    h = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    v = torch.zeros(2, 1, dtype=torch.float64)
    ts = torch.linspace(0, 1, 11, dtype=torch.float64)
    sol = nde.solve(_ball, (h, v), ts, per_sample=True, event=nde.Event(lambda t, y: y[0].sum(-1)))
    for i, h0 in enumerate((1.0, 2.0)):
        t_hit = math.sqrt(2 * h0 / G)
        assert abs(float(sol.event_ts[i, 0]) - t_hit) < 1e-8
        assert (
            torch.isnan(sol.ys[0][ts > t_hit, i]).all() and not torch.isnan(sol.ys[0][ts <= t_hit, i]).any()
        )
    assert sol.status_names == ["EVENT", "EVENT"] and sol.success


def test_event_options_are_validated():
    with pytest.raises(ValueError, match="terminal=False"):
        nde.Event(lambda t, y: y, jump=lambda t, y: y)
    with pytest.raises(ValueError, match="direction"):
        nde.Event(lambda t, y: y, direction=2)
    with pytest.raises(ValueError, match="dense"):
        nde.solve(lambda t, y: -y, torch.ones(2, 1), torch.tensor([0.0, 1.0]), dense=True,
                  event=nde.Event(lambda t, y: y.sum()))  # fmt: skip
    with pytest.raises(TypeError, match="Event"):
        nde.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), event=lambda t, y: y)


def test_odeint_event_returns_the_event_time_and_states():
    y0 = (torch.tensor([2.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    t0 = torch.tensor(0.0, dtype=torch.float64)
    event_t, states = odeint_event(_ball, y0, t0, event_fn=lambda t, y: y[0].sum(), rtol=1e-10, atol=1e-12)
    assert abs(float(event_t) - math.sqrt(4 / G)) < 1e-8
    assert states[0].shape == (2, 1) and abs(float(states[0][-1])) < 1e-9


def test_max_events_stops_after_exactly_that_many_as_a_normal_outcome():
    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    ts = torch.linspace(0, 10, 21, dtype=torch.float64)
    event = nde.Event(lambda t, y: y[0].sum(), terminal=False, direction=-1, jump=lambda t, y: (y[0], -0.9 * y[1]),
                      max_events=5)  # fmt: skip
    sol = nde.solve(_ball, y0, ts, rtol=1e-10, atol=1e-12, event=event)  # no exception
    assert sol.status == nde.Status.EVENT and sol.success
    want = _bounces(1.0, 0.9, 5)
    assert len(sol.event_ts) == 5 and max(abs(float(a) - b) for a, b in zip(sol.event_ts, want)) < 1e-8
    after = ts > want[-1]
    assert torch.isnan(sol.ys[0][after]).all() and not torch.isnan(sol.ys[0][~after]).any()


def test_max_events_per_sample_stops_each_sample_after_its_own_events():
    heights = [1.0, 0.5]
    h = torch.tensor([[x] for x in heights], dtype=torch.float64)
    v = torch.zeros(2, 1, dtype=torch.float64)
    ts = torch.linspace(0, 10, 21, dtype=torch.float64)
    event = nde.Event(lambda t, y: y[0].sum(-1), terminal=False, direction=-1,
                      jump=lambda t, y: (y[0], -0.9 * y[1]), max_events=3)  # fmt: skip
    sol = nde.solve(_ball, (h, v), ts, "tsit5", rtol=1e-10, atol=1e-12, per_sample=True, event=event)
    assert sol.status_names == ["EVENT", "EVENT"]
    assert sol.event_ts.shape == (2, 3) and not torch.isnan(sol.event_ts).any()
    for i, h0 in enumerate(heights):
        want = torch.tensor(_bounces(h0, 0.9, 3), dtype=torch.float64)
        assert torch.allclose(sol.event_ts[i], want, atol=1e-8)


def test_max_steps_reached_while_events_fire_every_step_suggests_max_events():
    """A condition crossing zero in every step (as events do where they accumulate) runs into
    max_steps; the error says how to stop after a number of events instead."""

    def f(t, y):
        return torch.cos(3 * t).expand_as(y)

    dense = nde.Event(lambda t, y: torch.sin(t * (math.pi / 0.05) + 0.3) + 0 * y.sum(), terminal=False)
    y0, ts = torch.full((1,), 1e-3, dtype=torch.float64), torch.tensor([0.0, 100.0], dtype=torch.float64)
    with pytest.raises(nde.MaxStepsReached, match=r"fired 1\d\d times.*Event\(\.\.\., max_events=N\)"):
        nde.solve(f, y0, ts, "rk4", dt=0.05, event=dense, max_steps=200)
    sparse = nde.Event(lambda t, y: y.sum(), terminal=False)  # a crossing every pi/3: no such hint
    with pytest.raises(nde.MaxStepsReached) as info:
        nde.solve(f, y0, ts, "rk4", dt=0.05, event=sparse, max_steps=200)
    assert "max_events" not in str(info.value)


def test_a_vector_condition_without_per_sample_is_pointed_at_per_sample():
    calls = []

    def f(t, y):
        calls.append(t)
        return _ball(t, y)

    y0 = (torch.ones(3, 1, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"returned shape \(3,\).*solve with per_sample=True"):
        nde.solve(
            f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), event=nde.Event(lambda t, y: y[0].sum(-1))
        )
    with pytest.raises(ValueError, match=r"one value per sample, shape \[3\], got shape \(\)"):
        nde.solve(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), per_sample=True,
                  event=nde.Event(lambda t, y: y[0].sum()))  # fmt: skip
    assert calls == []  # the condition is checked before f is first called


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_events_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="positive int or None"):
        nde.Event(lambda t, y: y.sum(), terminal=False, max_events=bad)
