"""Tableaux are validated data: consistent ones construct, inconsistent ones are rejected."""

from __future__ import annotations

import math

import numpy as np
import pytest

import torchnde as nde
from torchnde.solvers import ButcherTableau

from .helpers import EXPLICIT_SOLVERS


@pytest.mark.parametrize("name", EXPLICIT_SOLVERS)
def test_registered_tableaux_satisfy_consistency(name):
    tab = nde.solvers.resolve_solver(name).tableau
    a = tab.a_matrix
    assert np.allclose(a.sum(1), tab.c, atol=1e-12)
    assert math.isclose(math.fsum(tab.b), 1.0, abs_tol=1e-13)
    if tab.e is not None:
        assert abs(math.fsum(tab.e)) < 1e-12


@pytest.mark.parametrize(
    ("name", "fsal"),
    [("dopri5", True), ("tsit5", True), ("bosh3", True), ("dopri8", True), ("rk4", False), ("heun", False)],
)
def test_fsal_is_derived_from_the_data(name, fsal):
    assert nde.solvers.resolve_solver(name).tableau.fsal is fsal


def test_row_not_summing_to_c_is_rejected():
    with pytest.raises(ValueError, match="row 1 of a sums to"):
        ButcherTableau(c=(0.0, 0.5), a=((0.4,),), b=(0.0, 1.0))


def test_weights_not_summing_to_one_are_rejected():
    with pytest.raises(ValueError, match="weights b sum to"):
        ButcherTableau(c=(0.0, 0.5), a=((0.5,),), b=(0.1, 1.0))


def test_error_weights_not_summing_to_zero_are_rejected():
    with pytest.raises(ValueError, match="error weights e sum to"):
        ButcherTableau(c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), e=(0.5, 0.4))


def test_implicit_row_is_rejected():
    with pytest.raises(ValueError, match="not explicit"):
        ButcherTableau(c=(0.0, 1.0), a=((0.5, 0.5),), b=(0.5, 0.5))
