"""A misspelt name is answered with the valid ones and the closest ("did you mean 'dopri5'?"),
wherever valid names are listed: solvers, options, controllers, gradient strategies, events,
models, compat methods and options, experiments, discovery and dataset choices."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde
from torchnde._names import closest, did_you_mean
from torchnde.compat.torchdiffeq import odeint, odeint_adjoint, odeint_event

TS = torch.tensor([0.0, 1.0])


def _decay(t, y):
    return -y


def test_the_closest_names_are_found_case_insensitively_and_ties_are_all_named():
    assert closest("Tsit", ["tsit5", "dopri5"]) == ["tsit5"]
    assert closest("dopri6", ["dopri5", "dopri8", "tsit5"]) == ["dopri5", "dopri8"]
    assert closest("zzz", ["dopri5"]) == []
    assert did_you_mean("dopri6", ["dopri5", "dopri8"]) == " Did you mean 'dopri5' or 'dopri8'?"
    assert did_you_mean(["rtoll"], ["rtol", "atol"]) == " Did you mean 'rtol'?"
    assert (
        did_you_mean(["atl", "rtoll", "zzz"], ["rtol", "atol"])
        == " Did you mean 'atol' for 'atl', 'rtol' for 'rtoll'?"
    )
    assert did_you_mean("zzz", ["rtol"]) == ""


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: nde.solve(_decay, torch.ones(1), TS, solver="dopri6"),
            ValueError,
            r"valid solvers: .*Did you mean 'dopri5' or 'dopri8'\?",
        ),
        (lambda: nde.solve(_decay, torch.ones(1), TS, solver="Tsit"), ValueError, r"Did you mean 'tsit5'\?"),
        (
            lambda: nde.solve(_decay, torch.ones(1), TS, rtoll=1e-3),
            TypeError,
            r"valid options: .*Did you mean 'rtol'\?",
        ),
        (
            lambda: nde.solve(_decay, torch.ones(1), TS, gradient="adjiont"),
            ValueError,
            r"valid strategies: .*Did you mean 'adjoint'\?",
        ),
        (
            lambda: nde.PIDController(rtoll=1e-3),
            TypeError,
            r"valid options: rtol, atol.*Did you mean 'rtol'\?",
        ),
        (lambda: nde.ConstantStep(dtt=0.1), TypeError, r"Did you mean 'dt'\?"),
        (lambda: nde.Adjoint(seminrom=True), TypeError, r"Did you mean 'seminorm'\?"),
        (lambda: nde.Checkpoint(checkpionts=4), TypeError, r"Did you mean 'checkpoints'\?"),
        (lambda: nde.Event(lambda t, y: y.sum(), max_event=3), TypeError, r"Did you mean 'max_events'\?"),
        (lambda: nde.solvers.Newton(max_iter=3), TypeError, r"Did you mean 'max_iters'\?"),
        (lambda: nde.solvers.Newton(linear_solver="gmers"), ValueError, r"Did you mean 'gmres'\?"),
        (
            lambda: nde.models.NeuralODE(torch.nn.Linear(2, 2), max_step=10),
            TypeError,
            r"valid solve options: .*Did you mean 'max_steps'\?",
        ),
    ],
)
def test_core_names_suggest_the_closest(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: odeint(_decay, torch.ones(1), TS, method="dopri"), r"valid methods: .*Did you mean 'dopri5' or 'dopri8'\?"),
        (lambda: odeint(_decay, torch.ones(1), TS, method="scipy_solve"), r"Did you mean 'scipy_solver'\?"),
        (lambda: odeint_adjoint(torch.nn.Linear(1, 1), torch.ones(1), TS, method="rk5"), r"Did you mean 'rk4'\?"),
        (lambda: odeint(_decay, torch.ones(1), TS, options={"first_stp": 0.1}), r"Did you mean 'first_step'\?"),
        (lambda: odeint(_decay, torch.ones(1), TS, method="rk4", options={"step_sise": 0.1}), r"Did you mean 'step_size'"),
        (lambda: odeint_event(_decay, torch.ones(1), torch.tensor(0.0), event_fn=lambda t, y: y.sum(), rtoll=1e-3),
         r"supported: rtol, atol, method, options\. Did you mean 'rtol'\?"),
        (lambda: odeint_event(_decay, torch.ones(1), torch.tensor(0.0), event_fn=lambda t, y: y.sum(), method="dopri"),
         r"valid methods: .*Did you mean 'dopri5' or 'dopri8'\?"),
    ],
)  # fmt: skip
def test_compat_names_suggest_the_closest(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_experiment_names_suggest_the_closest():
    from torchnde.experiments import get

    with pytest.raises(KeyError, match=r"unknown experiment 'hnn-sprng'.*Did you mean 'hnn-spring'\?"):
        get("hnn-sprng")


def test_dataset_and_model_choices_suggest_the_closest():
    from torchnde.datasets.burgers import collocation_points

    with pytest.raises(ValueError, match=r"Did you mean 'uniform'\?"):
        collocation_points(10, method="unifrom")
    with pytest.raises(ValueError, match=r"Did you mean 'velocity'\?"):
        nde.datasets.relativistic_particle(coordinates="velocty")
    with pytest.raises(ValueError, match=r"Did you mean 'fourier'\?"):
        nde.models.DepthVariantNeuralODE(2, basis="fourir")
