"""The library, tests, benches and notebooks pass ruff (pyproject.toml's [tool.ruff]): unused imports, names used
before assignment and over-long lines are caught here rather than by a learner reading the code."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    assert found, "ruff is missing: it is in the test extras (pip install -e '.[test]')"
    return [found]


def test_ruff_passes_on_the_repository():
    result = subprocess.run(_ruff() + ["check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_would_catch_an_unused_import(tmp_path):
    # the check above can fail: the same configuration flags a planted mistake
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    result = subprocess.run(_ruff() + ["check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "F401" in result.stdout
