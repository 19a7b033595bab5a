"""Reproductions of the papers' claims: ``torchnde list``, ``torchnde run NAME [--quick]``.

```python
from torchnde.experiments import run_experiment
doc = run_experiment("anode-g1d", quick=True, out="/tmp/anode")
doc["passed"]
```
"""

from ._framework import Check, Experiment, Run, experiment, get, names, run_experiment

__all__ = ["Check", "Experiment", "Run", "experiment", "get", "names", "run_experiment"]
