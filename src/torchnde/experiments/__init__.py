"""Reproductions of the papers' claims: ``torchnde list``, ``torchnde run NAME [--quick]``,
``torchnde run NAME --seeds 0-4`` (a seed sweep).

```python
from torchnde.experiments import run_experiment, run_sweep
doc = run_experiment("anode-g1d", quick=True, out="/tmp/anode")
doc["passed"]
sweep = run_sweep("anode-g1d", "0-4", quick=True, out="/tmp/anode-seeds")
[(c["name"], c["passes"], c["min"], c["max"]) for c in sweep["criteria"]]
```
"""

from ._framework import Check, Experiment, Run, experiment, get, names, run_experiment
from ._sweep import parse_seeds, run_sweep

__all__ = [
    "Check",
    "Experiment",
    "Run",
    "experiment",
    "get",
    "names",
    "parse_seeds",
    "run_experiment",
    "run_sweep",
]
