"""The prepared GPU check runs end to end on a CPU with --tiny (the pipeline, not the speed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["paper_run"]["steps"] == 3 and summary["paper_run"]["images"] == 3 * 2 * 6
    assert summary["render"]["render_s"] > 0 and summary["render"]["step_s"] > 0
    assert summary["step"]["ratio"] > 0 and 0 < summary["now_ratio"] < 10
    for line in ("6-branch step", "render", "paper run", "NoW median"):
        assert line in run.stdout
    assert (tmp_path / "paper_run" / "checkpoint.pt").is_file()
    (tmp_path / "paper_run" / "checkpoint.pt").unlink()  # large: keep pytest's tmp small
