"""Brownian motion objects: increments are N(0, dt), disjoint increments are uncorrelated,
increments add up, the path does not depend on the order of queries, the Lévy area has its law,
and the interval's memory stays bounded."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import scipy.stats
import torch

import torchnde as nde

DTYPE = torch.float64
KINDS = ["interval", "path"]


def _make(kind: str, shape, seed: int, levy_area: bool = False, **kw):
    if kind == "interval":
        return nde.BrownianInterval(0.0, 1.0, shape, dtype=DTYPE, seed=seed, levy_area=levy_area, **kw)
    return nde.BrownianPath(0.0, shape, dtype=DTYPE, seed=seed, levy_area=levy_area, t1=1.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("s", "t"), [(0.0, 1.0), (0.3, 0.7), (0.123, 0.1231), (0.5, 0.5 + 2**-10)])
def test_increments_pass_a_kolmogorov_smirnov_test_against_n0_dt_over_many_seeds(kind, s, t):
    # one draw per seed: the law over seeds, not over entries of one draw
    samples = np.array([float(_make(kind, (), seed)(s, t)) for seed in range(400)]) / math.sqrt(t - s)
    assert scipy.stats.kstest(samples, "norm").pvalue > 1e-3
    many = _make(kind, (4000,), 7)(s, t) / math.sqrt(t - s)  # and over the entries of one draw
    assert scipy.stats.kstest(many.numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_disjoint_increments_are_uncorrelated(kind):
    bm = _make(kind, (20000,), 3)
    edges = [0.0, 0.1, 0.35, 0.36, 0.8, 1.0]
    incs = torch.stack([bm(a, b) / math.sqrt(b - a) for a, b in itertools.pairwise(edges)])
    corr = torch.corrcoef(incs)
    off = corr - torch.eye(len(incs), dtype=DTYPE)
    assert off.abs().max() < 0.04  # 20,000 samples: the null's standard deviation is 0.007
    assert torch.allclose(incs.var(1), torch.ones(len(incs), dtype=DTYPE), atol=0.05)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levy", [False, True])
def test_increments_add_up_to_rounding(kind, levy):
    bm = _make(kind, (50,), 11, levy_area=levy)
    rng = random.Random(0)
    for _ in range(30):
        s, t, u = sorted(rng.random() for _ in range(3))
        whole = bm(s, u)
        assert torch.allclose(whole, bm(s, t) + bm(t, u), rtol=0, atol=1e-14)
        assert torch.equal(bm(u, s), -whole)  # backwards in time: the negated increment


@pytest.mark.parametrize("levy", [False, True])
def test_the_interval_gives_the_same_path_whatever_the_order_of_queries(levy):
    rng = random.Random(1)
    times = sorted({0.0, 1.0, *(rng.random() for _ in range(60)), *(k / 64 for k in range(65))})
    pairs = list(itertools.pairwise(times))
    forward = _make("interval", (5,), 42, levy_area=levy)
    first = [forward.levy(a, b) if levy else forward(a, b) for a, b in pairs]
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    again = _make("interval", (5,), 42, levy_area=levy, cache_size=8)  # evictions too
    got = dict(zip(shuffled, [again.levy(a, b) if levy else again(a, b) for a, b in shuffled]))
    for pair, value in zip(pairs, first):
        if levy:
            assert torch.equal(got[pair][0], value[0]) and torch.equal(got[pair][1], value[1])
        else:
            assert torch.equal(got[pair], value)
    # reproducible from the seed, different for another seed
    assert torch.equal(_make("interval", (5,), 42)(0.0, 1.0), _make("interval", (5,), 42)(0.0, 1.0))
    assert not torch.equal(_make("interval", (5,), 42)(0.0, 1.0), _make("interval", (5,), 43)(0.0, 1.0))


def test_a_path_revisits_the_points_it_has_drawn_and_bridges_between_them():
    bm = _make("path", (3,), 5)
    steps = [bm(0.125 * i, 0.125 * (i + 1)) for i in range(8)]
    inside = bm(0.3, 0.375)  # a bridge point inside a stored step
    assert len(bm) == 10
    assert torch.equal(bm(0.25, 0.375), steps[2])  # the stored step is unchanged by the bridge
    assert torch.allclose(bm(0.25, 0.3) + inside, steps[2], atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_the_space_time_levy_area_is_n0_dt_over_12_and_independent_of_the_increment(kind):
    bm = _make(kind, (20000,), 9, levy_area=True)
    bm(0.0, 0.2)  # a point first, so the path's bridge formula is exercised as well
    for s, t in [(0.0, 1.0), (0.1, 0.6), (0.3, 0.3 + 2**-8)]:
        w, h = bm.levy(s, t)
        z = h / math.sqrt((t - s) / 12)
        assert scipy.stats.kstest(z.numpy(), "norm").pvalue > 1e-3
        assert abs(float(torch.corrcoef(torch.stack([w, h]))[0, 1])) < 0.04
        assert torch.equal(bm.levy(t, s)[1], h) and torch.equal(bm.levy(t, s)[0], -w)


def test_the_levy_area_of_adjacent_intervals_combines_to_the_whole():
    bm = _make("interval", (100,), 2, levy_area=True)
    (w1, h1), (w2, h2), (w, h) = bm.levy(0.2, 0.45), bm.levy(0.45, 0.9), bm.levy(0.2, 0.9)
    # the time integral of W - W(0.2) over [0.2, 0.9], assembled from the two parts
    a = 0.25 * (h1 + w1 / 2) + 0.45 * (h2 + w2 / 2) + 0.45 * w1
    assert torch.allclose(a, 0.7 * (h + w / 2), atol=1e-14)


def test_the_interval_memory_stays_bounded_over_100_thousand_queries():
    bm = nde.BrownianInterval(0.0, 1.0, (256,), dtype=DTYPE, seed=0, cache_size=64)
    dt = 2.0**-17
    total = torch.zeros(256, dtype=DTYPE)
    for k in range(100_000):
        total += bm(k * dt, (k + 1) * dt)
        assert bm.cached <= 64
    assert torch.allclose(total, bm(0.0, 100_000 * dt), atol=1e-12)
    # random times as well (every query descends to the full resolution)
    rng = random.Random(3)
    for _ in range(200):
        a, b = sorted(rng.random() for _ in range(2))
        bm(a, b)
        assert bm.cached <= 64


def test_a_query_outside_the_range_or_a_bad_option_is_an_error():
    bm = nde.BrownianInterval(0.0, 1.0, (2,), seed=0)
    with pytest.raises(ValueError, match="outside the Brownian motion's range"):
        bm(0.5, 1.5)
    with pytest.raises(ValueError, match="levy_area=True"):
        bm.levy(0.0, 0.5)
    with pytest.raises(ValueError, match="t0 < t1"):
        nde.BrownianInterval(1.0, 0.0, (2,))
    with pytest.raises(TypeError, match="seed"):
        nde.BrownianInterval(0.0, 1.0, (2,), seed=1.5)
    with pytest.raises(ValueError, match="cache_size"):
        nde.BrownianInterval(0.0, 1.0, (2,), cache_size=1)
    assert bm(0.5).shape == (2,) and torch.equal(bm(0.5), bm(0.0, 0.5))  # torchsde's one-argument form


def test_without_a_seed_torch_manual_seed_reproduces_the_path():
    torch.manual_seed(123)
    a = nde.BrownianInterval(0.0, 1.0, (3,))(0.0, 0.5)
    torch.manual_seed(123)
    b = nde.BrownianInterval(0.0, 1.0, (3,))(0.0, 0.5)
    assert torch.equal(a, b) and a.dtype == torch.get_default_dtype()
