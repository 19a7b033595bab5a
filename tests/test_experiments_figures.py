"""The experiments' figures: labelled axes, no overlapping texts, integer ticks, ranges from the data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from torchnde.experiments import _framework as fw
from torchnde.experiments._figures import data_range, finish, problems, save_png
from torchnde.experiments.hnn import _plot_energy


def _crowded():
    """Three panels with long titles and labels and a suptitle, laid out by hand (badly)."""
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for k, ax in enumerate(axes):
        ax.plot(np.linspace(0, 1, 20), np.linspace(0, 1, 20) ** (k + 1))
        ax.set(xlabel="time t", ylabel="a rather long quantity name", title=f"panel {k}: a long title")
    fig.suptitle("A suptitle that sits on the panel titles")
    fig.subplots_adjust(left=0.05, right=0.99, wspace=0.05, top=0.86)
    return fig


def test_problems_finds_overlapping_labels_and_titles():
    fig = _crowded()
    found = problems(fig)
    plt.close(fig)
    assert "panel 1 plot area overlaps panel 2 y label" in found, found
    assert any("suptitle overlaps panel" in p for p in found), found


def test_finish_lays_the_same_figure_out_without_overlaps():
    fig = _crowded()
    fig.set_layout_engine(None)
    finish(fig)
    found = problems(fig)
    plt.close(fig)
    assert found == []


def test_problems_finds_unlabelled_axes_but_accepts_a_shared_axis_labelled_once():
    fig, axes = plt.subplots(1, 3, sharey=True, layout="constrained")
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[2].set_xlabel("")
    found = problems(fig)
    plt.close(fig)
    assert found == ["panel 3 has no x label"]


def test_integer_axes_get_integer_ticks():
    fig, (ax, bx) = plt.subplots(1, 2)
    ax.plot(range(7), [1.5, 2.0, 0.3, 0.2, 0.9, 1.0, 0.1])  # steps on x
    ax.scatter([1, 2, 2, 3], [0.5, 0.25, 0.75, 0.1])
    bx.plot([0.0, 0.5, 1.0], [0.0, 0.2, 0.1])
    finish(fig)
    fig.canvas.draw()
    xticks = ax.get_xticks()
    assert len(xticks) >= 3 and np.all(xticks == np.round(xticks))
    assert not np.all(bx.get_xticks() == np.round(bx.get_xticks()))  # a real-valued axis is left alone
    assert not np.all(ax.get_yticks() == np.round(ax.get_yticks()))
    plt.close(fig)


def test_data_range_holds_the_data_and_leaves_out_what_it_is_told_to():
    assert data_range([[1.0, 2.0], torch.tensor([1.5, 3.0])]) == pytest.approx((0.9, 3.1))
    lo, hi = data_range([np.array([0.0, 1e-3, 1e-1, np.inf])], log=True)
    assert lo == pytest.approx(1e-3 / 10**0.1) and hi == pytest.approx(1e-1 * 10**0.1)
    assert data_range([[1e-12, 1e-4, 1e-2]], log=True, floor=1e-9)[0] > 1e-5
    with pytest.raises(ValueError, match="at least one finite value"):
        data_range([[np.nan, -1.0]], log=True)


def test_the_energy_figure_has_labels_and_no_overlaps(tmp_path):
    # a synthetic rollout result: the truth conserves energy, the baseline drifts away
    t = torch.linspace(0, 20, 201)
    true = torch.full((201, 3), 0.5)
    ev = {"t": t, "true_energy": true, "hnn_energy": true + 0.01 * torch.sin(t)[:, None]}
    ev["baseline_energy"] = true * (1 + 0.05 * t[:, None])
    run = fw.Run(tmp_path, progress=False)
    with matplotlib.rc_context({"figure.constrained_layout.use": True}):
        _plot_energy(run, ev, [0, 1, 2], "Ideal mass-spring: energy along rollouts")
    assert run.figures == [("energy.png", "True energy along each model's RK4 rollout.")]
    assert run.figure_problems == {}
    assert (tmp_path / "energy.png").stat().st_size > 10_000


def test_a_figure_with_problems_is_warned_about_and_recorded(tmp_path, capsys):
    run = fw.Run(tmp_path, progress=False)
    fig, ax = plt.subplots()
    ax.plot([0.0, 1.0], [0.0, 1.0])
    run.figure("bare", fig)
    err = capsys.readouterr().err
    assert run.figure_problems == {"bare.png": ["panel 1 has no x label", "panel 1 has no y label"]}
    assert "warning: figure" in err and "panel 1 has no x label" in err


def test_a_panel_placed_over_another_panels_label_is_found_through_run_figure(tmp_path):
    run = fw.Run(tmp_path, progress=False)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([0.0, 1.0], [0.0, 1.0])
    ax.set(xlabel="time t", ylabel="a quantity")
    inset = fig.add_axes([0.0, 0.3, 0.25, 0.4])  # placed by hand, over the y label
    inset.plot([0.0, 1.0], [1.0, 0.0])
    inset.set(xlabel="u", ylabel="v")
    run.figure("inset", fig)
    assert "panel 1 y label overlaps panel 2 plot area" in run.figure_problems["inset.png"]


@pytest.mark.parametrize("panels", [1, 6])
def test_save_png_writes_the_bytes_of_a_tight_savefig_after_the_layout_check(tmp_path, panels):
    """Run.figure's path (house style, layout check at the file's resolution, then save_png)
    writes what savefig(bbox_inches="tight") writes, without a second layout pass."""
    files = []
    for name in ("plain", "fast"):
        rng = np.random.default_rng(0)
        fig, axes = plt.subplots(1, panels, figsize=(3 * panels, 3), squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.plot(rng.random(50), label=f"curve {k}")
            ax.set(xlabel="step", ylabel="value", title=f"panel {k}")
            ax.legend()
        finish(fig)
        fig.set_dpi(110)
        assert problems(fig) == []
        files.append(tmp_path / f"{name}.png")
        if name == "plain":
            fig.savefig(files[-1], dpi=110, bbox_inches="tight")
        else:
            save_png(fig, files[-1], dpi=110)
        plt.close(fig)
    assert files[0].read_bytes() == files[1].read_bytes()
