"""An experiment killed mid-training (SIGKILL) and started again resumes and ends as an uninterrupted run.

The fastest experiment's quick tier (``anode-g1d``: two stages of 250 Adam steps, checkpoints
every 50) runs in a subprocess, is killed once its first checkpoint is on disk, and is started
again; its checks and metrics must equal those of an uninterrupted run. About 25 s of CPU (an
uninterrupted run, a killed one and its resumption, each about 10 s with the interpreter's start).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _command(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torchnde.experiments.cli",
        "run",
        "anode-g1d",
        "--quick",
        "--out",
        str(out),
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(out: Path) -> str:
    done = subprocess.run(_command(out), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _comparable(doc: dict) -> dict:
    """The run's results without its timings."""
    metrics = {k: v for k, v in doc["metrics"].items() if "seconds" not in k}
    return {"checks": doc["checks"], "metrics": metrics, "passed": doc["passed"]}


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_ends_with_the_same_metrics(tmp_path):
    straight = tmp_path / "straight"
    _run(straight)

    resumed = tmp_path / "resumed"
    first = resumed / "checkpoints" / "node.pt"
    proc = subprocess.Popen(
        _command(resumed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert first.exists() and not (resumed / "metrics.json").exists()

    out = _run(resumed)
    assert f"resuming 'node' from checkpoint {first} at step " in out
    step = int(out.split(f"{first} at step ")[1].split()[0])
    assert 50 <= step < 250 and step % 50 == 0

    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert a["figure_problems"] == {}, a["figure_problems"]  # g1d flows: labelled, nothing overlaps
    assert a["passed"] and _comparable(b) == _comparable(a)  # bit for bit: every RNG state restored
