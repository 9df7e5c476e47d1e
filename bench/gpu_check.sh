#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): on one GPU, in at most 8 minutes, the 6-branch step vs a plain
# ResNet-50 step, renders vs the step, a 5-minute paper-preset run and its NoW score, on one summary screen.
#   bash bench/gpu_check.sh            # from the repository root, with .venv set up (make setup)
#   bash bench/gpu_check.sh --tiny     # the same on a CPU, in about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec timeout 600 "$PY" bench/gpu_check.py "$@"
