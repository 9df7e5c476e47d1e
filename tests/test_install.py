"""A non-editable install (the package as pip builds it, away from the source checkout) runs the quick preset,
on rings rendered on the fly and on the shipped sample: every file it needs is package data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_non_editable_install_runs_the_quick_preset(tmp_path):
    target = tmp_path / "site-packages"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    assert not (target / "ringnet_lib" / "__editable__").exists()
    code = ("import sys, ringnet_lib; from ringnet_lib.train import main\n"
            f"assert ringnet_lib.__file__.startswith({str(target)!r}), ringnet_lib.__file__\n"
            "common = ['--max-steps', '2', '--no-tensorboard', '--no-progress', '--eval-rings', '2']\n"
            "sys.exit(main(['--preset', 'quick', '--out-dir', 'a', *common])\n"
            "         or main(['--preset', 'quick', '--data', 'synthetic', '--out-dir', 'b', *common]))\n")
    env = {**os.environ, "PYTHONPATH": str(target), "RINGNET_CACHE": str(tmp_path / "cache")}  # a cold cache too
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / "a" / "checkpoint.pt").is_file() and (tmp_path / "b" / "checkpoint.pt").is_file()
    for name in ("a", "b"):
        (tmp_path / name / "checkpoint.pt").unlink()  # about 140 MB each
