"""The experiments' figures: one house style, a layout check, and axis ranges chosen from the data.

:func:`finish` is what :meth:`Run.figure` applies before saving: constrained layout (titles,
suptitles and labels never overlap), integer ticks on axes whose plotted values are all
integers (steps, epochs, term counts, NFE). :func:`problems` lists what would make a figure
unfit for a paper: a panel without an x or y label (a shared axis may be labelled once), or
text (titles, axis labels, tick labels, legends) of one panel or of the figure overlapping
another panel's text or plot area. :func:`data_range` picks limits from the curves that matter, so that one diverging
curve is clipped at the edge instead of flattening the others.

```python
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torchnde.experiments._figures import finish, problems
fig, axes = plt.subplots(1, 2)
axes[0].plot(range(10), [v * v for v in range(10)])
axes[0].set(xlabel="step", ylabel="loss", title="a long title over the first panel")
axes[1].plot([0.5, 1.5], [1.0, 2.0])
finish(fig)
problems(fig)   # ['panel 2 has no x label', 'panel 2 has no y label']
```
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["data_range", "finish", "problems"]


def _plotted_values(ax: Any, which: str) -> np.ndarray | None:
    """Every x (or y) data value of the lines and scatters drawn in data coordinates."""
    values = []
    for line in ax.get_lines():
        if line.get_transform() == ax.transData:
            values.append(np.asarray(line.get_xdata() if which == "x" else line.get_ydata(), dtype=float))
    for coll in ax.collections:
        if coll.get_offset_transform() == ax.transData and not ax.images:
            offsets = np.asarray(coll.get_offsets(), dtype=float)
            if offsets.ndim == 2 and offsets.shape[1] == 2 and len(offsets):
                values.append(offsets[:, 0 if which == "x" else 1])
    if not values:
        return None
    return np.concatenate([v.ravel() for v in values])


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        if axis.get_scale() != "linear":
            continue
        values = _plotted_values(ax, which)
        if values is None:
            continue
        values = values[np.isfinite(values)]
        if len(np.unique(values)) >= 2 and np.all(values == np.round(values)):
            axis.set_major_locator(MaxNLocator(integer=True))


def finish(fig: Any) -> Any:
    """Apply the house style to ``fig`` (constrained layout, integer ticks on integer axes)."""
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    for ax in fig.axes:
        _integer_ticks(ax)
    return fig


def _is_colorbar(ax: Any) -> bool:
    return hasattr(ax, "_colorbar") or ax.get_label() == "<colorbar>"


def _labelled(ax: Any, which: str) -> bool:
    """``ax`` has its own ``which`` label, or shares that axis with a panel that has one."""
    get = "get_xlabel" if which == "x" else "get_ylabel"
    if getattr(ax, get)().strip():
        return True
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    return any(getattr(other, get)().strip() for other in shared.get_siblings(ax) if other is not ax)


def _texts(fig: Any, renderer: Any) -> list[tuple[int, str, Any]]:
    """(owner, what, window extent) of every visible, non-empty text and plot area of the figure."""
    out: list[tuple[int, str, Any]] = []

    def add(owner: int, what: str, artist: Any) -> None:
        if artist is None or not artist.get_visible():
            return
        if hasattr(artist, "get_text") and not artist.get_text().strip():
            return
        box = artist.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            out.append((owner, what, box))

    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        add(-1, name.strip("_"), getattr(fig, name, None))
    for legend in fig.legends:
        add(-1, "figure legend", legend)
    places: dict[tuple[float, ...], int] = {}
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        panel = f"panel {k + 1}"
        box = ax.get_window_extent(renderer)
        k = places.setdefault(tuple(np.round(box.extents, 1)), k)  # twin axes: one owner
        if box.width > 0 and box.height > 0:
            out.append((k, f"{panel} plot area", box))
        for title in (ax._left_title, ax.title, ax._right_title):
            add(k, f"{panel} title", title)
        add(k, f"{panel} x label", ax.xaxis.label)
        add(k, f"{panel} y label", ax.yaxis.label)
        add(k, f"{panel} legend", ax.get_legend())
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            lo, hi = sorted(axis.get_view_interval())
            slack = 1e-9 * max(abs(lo), abs(hi), 1.0)
            for tick in axis.get_major_ticks():  # the drawn ones: inside the view interval
                if lo - slack <= tick.get_loc() <= hi + slack:
                    for label in (tick.label1, tick.label2):
                        add(k, f"{panel} tick label {label.get_text()!r}", label)
    return out


def problems(fig: Any) -> list[str]:
    """What keeps ``fig`` from a paper: unlabelled panels, overlapping texts (empty if none)."""
    found: list[str] = []
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison or _is_colorbar(ax):
            continue
        for which in ("x", "y"):
            if not _labelled(ax, which):
                found.append(f"panel {k + 1} has no {which} label")
    # the layout and every text's extent, without rasterising the figure (a full Agg draw costs
    # as much as the savefig that follows: about a quarter of a figure-heavy quick tier)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig, renderer)
    for i, (owner_a, what_a, box_a) in enumerate(texts):
        for owner_b, what_b, box_b in texts[i + 1 :]:
            if owner_a == owner_b and owner_a != -1:
                continue  # within one panel matplotlib places its own texts apart
            if what_a.endswith("plot area") and what_b.endswith("plot area"):
                continue  # panels may touch (shared axes); their texts may not
            overlap_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            overlap_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if overlap_w > 1 and overlap_h > 1:
                found.append(f"{what_a} overlaps {what_b}")
    return found


def save_png(fig: Any, path: Any, dpi: int) -> None:
    """``fig.savefig(path, dpi=dpi, bbox_inches="tight")`` for a figure just laid out at ``dpi``
    (``fig.set_dpi(dpi)``, then :func:`problems`), byte for byte, without laying it out again:
    the tight box is read from that layout and the layout engine is switched off, so savefig
    skips its own layout pass (about a third of a figure's cost). Under rcParams that ask every
    figure for a layout engine, or a ``"layout"`` padding, it falls back to the plain call."""
    import matplotlib

    rc = matplotlib.rcParams
    pad = rc["savefig.pad_inches"]
    if rc["figure.autolayout"] or rc["figure.constrained_layout.use"] or not isinstance(pad, (int, float)):
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        return
    box = fig.get_tightbbox().padded(pad)
    fig.set_layout_engine(None)  # the layout stays as the last draw left it
    fig.savefig(path, dpi=dpi, bbox_inches=box)


def data_range(
    values: Iterable[Any], *, log: bool = False, margin: float = 0.05, floor: float | None = None
) -> tuple[float, float]:
    """Axis limits that hold every finite value of ``values`` (arrays or tensors), with a margin.

    Pass the curves that matter (the truth, the good models); a curve that leaves this range is
    clipped at the edge of the axes. ``log``: the margin is taken in decades and non-positive
    values are left out; ``floor``: values below it are left out (e.g. an exact zero at t = 0 on
    a log axis).

    ```python
    data_range([[1.0, 2.0], [1.5, 3.0]])              # (0.9, 3.1)
    data_range([[0.0, 1e-3, 1e-1]], log=True)         # about (7.9e-4, 0.126)
    ```
    """
    parts = []
    for v in values:
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        parts.append(np.asarray(v, dtype=float).ravel())
    flat = np.concatenate(parts) if parts else np.array([])
    flat = flat[np.isfinite(flat)]
    if log:
        flat = flat[flat > 0]
    if floor is not None:
        flat = flat[flat >= floor]
    if not len(flat):
        raise ValueError("data_range needs at least one finite value (positive for log=True)")
    lo, hi = float(flat.min()), float(flat.max())
    if log:
        a, b = np.log10(lo), np.log10(hi)
        pad = margin * max(b - a, 1.0)
        return float(10 ** (a - pad)), float(10 ** (b + pad))
    pad = margin * (hi - lo) if hi > lo else max(abs(hi), 1.0) * margin
    return lo - pad, hi + pad
