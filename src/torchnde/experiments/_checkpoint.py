"""Training checkpoints of the experiment harness: written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors and plain containers (dicts, lists, numbers, strings), so
``torch.load(path, weights_only=True)`` reads it without running pickled code:

- ``config``: what it was written for (file format, experiment, tier, seed, stage, step count);
- ``step`` and ``history``: how far the stage got and the per-step numbers so far;
- ``state``: the ``state_dict()`` of every model, optimiser and scheduler of the stage, and the
  state of any ``torch.Generator`` it uses;
- ``rng``: Python's, numpy's and torch's (CPU and CUDA) global generator states, as tensors;
  a training run across processes (``torchrun``) stores a list of them, one per rank, and each
  rank restores its own.

Restoring all of it makes a resumed run continue exactly where the interrupted one stopped.
:func:`read_checkpoint` refuses (:class:`CheckpointError`, with the reason) a file that cannot be read, was
written by another format version or for another configuration, or does not fit the models and
optimisers it is loaded into; it restores nothing in that case.

```python
import torch
from pathlib import Path
from torchnde.experiments import _checkpoint as ckpt
model = torch.nn.Linear(2, 2)
config = {"experiment": "toy", "tier": "quick", "seed": 0, "tag": "fit", "steps": 10}
ckpt.write_checkpoint(Path("/tmp/fit.pt"), config, 10, [], {"model": model})
blob = ckpt.read_checkpoint(Path("/tmp/fit.pt"), config, {"model": model})   # restores model and RNGs
blob["step"]   # 10
```
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "CheckpointError", "read_checkpoint", "rng_states", "write_checkpoint"]

FORMAT = 2  # 1: the first layout (pickled numpy and Python RNG states, read without weights_only)


class CheckpointError(Exception):
    """A checkpoint that must not be used; the message says why."""


def rng_states() -> dict[str, Any]:
    """Python's, numpy's and torch's global generator states, as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": py_state[2],
        },
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def _load_state(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def _misfit(key: str, obj: Any, saved: Any) -> str | None:
    """Why ``saved`` does not fit ``obj`` (shapes, dtypes, parameter counts), or None."""
    if isinstance(obj, torch.nn.Module):
        if not isinstance(saved, Mapping):
            return f"{key!r} holds no module state"
        mine = obj.state_dict()
        if set(mine) != set(saved):
            diff = sorted(set(mine) ^ set(saved))[:3]
            return f"{key!r} has other parameters than the model (e.g. {', '.join(diff)})"
        for name, tensor in mine.items():
            other = saved[name]
            if (
                not isinstance(other, torch.Tensor)
                or other.shape != tensor.shape
                or other.dtype != tensor.dtype
            ):
                got = (tuple(other.shape), other.dtype) if isinstance(other, torch.Tensor) else type(other)
                return f"{key}.{name} is {got}, the model's is {(tuple(tensor.shape), tensor.dtype)}"
    elif isinstance(obj, torch.optim.Optimizer):
        groups = saved.get("param_groups") if isinstance(saved, Mapping) else None
        if groups is None:
            return f"{key!r} holds no optimiser state"
        mine = [len(g["params"]) for g in obj.param_groups]
        theirs = [len(g["params"]) for g in groups]
        if mine != theirs:
            return f"{key!r} optimises {theirs} parameters per group, this optimiser {mine}"
    elif isinstance(obj, torch.Generator) and not isinstance(saved, torch.Tensor):
        return f"{key!r} holds no generator state"
    return None


def write_checkpoint(
    path: Path,
    config: Mapping[str, Any],
    step: int,
    history: list[dict[str, Any]],
    state: Mapping[str, Any],
    rng: list[dict[str, Any]] | None = None,
    seconds: float | None = None,
) -> None:
    """Save a checkpoint to ``path`` atomically (a temporary file, then ``os.replace``).

    ``rng``: every rank's :func:`rng_states` (rank order), written by rank 0 for a run across
    processes; default: this process's own. ``seconds``: the training time of the ``step``
    steps so far (kept so that a resumed run reports the whole stage's time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "config": dict(config),
        "step": int(step),
        "history": history,
        "state": {k: _state_of(v) for k, v in state.items()},
        "rng": rng_states() if rng is None else list(rng),
    }
    if seconds is not None:
        blob["seconds"] = float(seconds)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(blob, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(
    path: Path, config: Mapping[str, Any], state: Mapping[str, Any], rank: int = 0
) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``state`` and the global RNGs; return it.

    ``rank``: which of a per-rank list of generator states (a run across processes) to restore.

    Raises :class:`CheckpointError` (and restores nothing) if the file cannot be read, has
    another format version, was written for another ``config``, or does not fit ``state``.
    """
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # any failure to read means: do not use it
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"it cannot be read ({type(err).__name__}: {reason[:200]})") from err
    if not isinstance(blob, dict) or not {"config", "step", "history", "state", "rng"} <= set(blob):
        raise CheckpointError("it is not a torchnde training checkpoint")
    if blob.get("format") != FORMAT:
        raise CheckpointError(f"it has format version {blob.get('format')}, this version reads {FORMAT}")
    saved = blob["config"]
    for key, value in config.items():
        if saved.get(key) != value:
            raise CheckpointError(f"it was written for {key} {saved.get(key)!r}, this run has {value!r}")
    for key in sorted(set(saved) - set(config)):  # e.g. world_size: written by a run across processes
        raise CheckpointError(f"it was written for {key} {saved[key]!r}, this run has none")
    if set(blob["state"]) != set(state):
        raise CheckpointError(f"it holds {sorted(blob['state'])}, the stage trains {sorted(state)}")
    for key, obj in state.items():
        why = _misfit(key, obj, blob["state"][key])
        if why is not None:
            raise CheckpointError(f"it does not fit: {why}")
    if not isinstance(blob["step"], int) or not isinstance(blob["history"], list):
        raise CheckpointError("its step count or history is malformed")
    saved_rng = blob["rng"]
    if isinstance(saved_rng, list):
        if not 0 <= rank < len(saved_rng):
            raise CheckpointError(f"it holds the generators of {len(saved_rng)} ranks, not of rank {rank}")
        saved_rng = saved_rng[rank]
    backup = {key: copy.deepcopy(_state_of(obj)) for key, obj in state.items()}
    rng = rng_states()
    try:
        for key, obj in state.items():
            _load_state(obj, blob["state"][key])
        _set_rng_states(saved_rng)
    except Exception as err:
        for key, obj in state.items():
            _load_state(obj, backup[key])
        _set_rng_states(rng)
        raise CheckpointError(f"it does not load ({type(err).__name__}: {err})") from err
    return blob
