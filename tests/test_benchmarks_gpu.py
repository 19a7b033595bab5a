"""``benchmarks/gpu.py --dry-run``: every GPU case (core, training, stiff, SDE) runs on the CPU at
tiny sizes with one repeat and writes its JSON and markdown, the device named."""

from __future__ import annotations

import json

import pytest
from benchmarks import gpu


def test_the_dry_run_times_every_case_on_the_cpu_and_writes_json_and_markdown(tmp_path, capsys):
    assert gpu.main(["--dry-run", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["dry_run"] and doc["device_type"] == "cpu" and doc["device"].startswith("CPU")
    assert list(doc["groups"]) == ["core/no_grad/b4", "train/backprop/b4", "stiff/robertson/b2", "sde/gbm/b8"]
    for key, group in doc["groups"].items():
        subject = group["rows"][group["subject"]]
        assert subject["error"] is None and subject["samples"] == 1 and subject["median_s"] > 0, key
    core = doc["groups"]["core/no_grad/b4"]["rows"]
    assert core["torchnde_ps"]["steps"] == core["torchnde"]["steps"] > 0  # counters from a probe solve
    assert core["torchdiffeq"]["ratio"] > 0 and core["diffrax"]["error"] == gpu.DRY_SKIP
    assert doc["groups"]["stiff/robertson/b2"]["rows"]["kvaerno5"]["steps"] > 0
    text = (tmp_path / "gpu.md").read_text()
    assert text.startswith(f"# GPU benchmarks on {doc['device']}") and "**dry run**" in text
    assert "`sde/gbm/b8` | `torchsde.sdeint euler`" in text


def test_without_a_gpu_a_real_run_is_refused_with_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu.main([])
    assert "--dry-run" in capsys.readouterr().err
