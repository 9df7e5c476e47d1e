# The two commands of the README:
#   make demo   set everything up, then run the main job on the embedded default head
#   make test   set everything up, then run the tests (pytest, and nbval over every notebook)
# Everything lives in $(VENV); nothing is downloaded at run time.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
OUT ?= outputs
ARCH := $(shell uname -m)
# torch and torchvision must come from one pip command (a lone torch 2.13 CPU
# build does not import beside PyPI's torchvision). x86_64: 2.14.1 + 0.29.1.
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
# The venv's bin first, so that Jupyter's "python3" kernel is the venv's python.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: setup demo test bench ablation ablation-ci clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[notebooks,test]'
	$(PY) -m ringnet_lib.check_kernel
	touch $@

# The main job: the FLAME notebook, quick training (06) into $(OUT)/quick, its evaluation on
# held-out synthetic identities (07: metrics table + error curves), and the photo demo (08).
demo: setup
	mkdir -p $(OUT)/figures
	$(PY) -m papermill -k python3 --cwd notebooks notebooks/01_flame.ipynb $(OUT)/01_flame.ipynb \
		-p figure_dir $(abspath $(OUT))/figures
	$(PY) -m papermill -k python3 --cwd notebooks notebooks/06_training.ipynb $(OUT)/06_training.ipynb \
		-p preset quick -p out_dir $(abspath $(OUT))/quick -p live_plot False -p figure_dir $(abspath $(OUT))/figures
	$(PY) -m papermill -k python3 --cwd notebooks notebooks/07_evaluation.ipynb $(OUT)/07_evaluation.ipynb \
		-p checkpoint $(abspath $(OUT))/quick/checkpoint.pt -p figure_dir $(abspath $(OUT))/figures
	$(PY) -m papermill -k python3 --cwd notebooks notebooks/08_demo.ipynb $(OUT)/08_demo.ipynb \
		-p checkpoint $(abspath $(OUT))/quick/checkpoint.pt -p out_dir $(abspath $(OUT))/demo
	@echo "Executed notebooks in $(OUT)/, checkpoint $(OUT)/quick/checkpoint.pt, figures and metrics.md in $(OUT)/figures/, demo meshes in $(OUT)/demo/"

test: setup
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider tests notebooks

bench: setup
	$(PY) bench/flame_forward.py
	$(PY) bench/data_loading.py
	$(PY) bench/train_step.py

# The paper's ablations (R, λ_sc, ring/swap/mean) at equal steps, scored on held-out
# synthetic identities. Paper scale, on a GPU:
#   $(PY) -m ringnet_lib.ablation --paper --device cuda --out $(OUT)/ablation_paper
ablation: setup
	$(PY) -m ringnet_lib.ablation --quick --out $(OUT)/ablation

ablation-ci: setup
	$(PY) -m ringnet_lib.ablation --ci --out $(OUT)/ablation_ci

clean:
	rm -rf $(OUT) .pytest_cache
