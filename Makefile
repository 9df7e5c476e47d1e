# The two commands of the README:
#   make demo   set everything up, then run the main job on the embedded default head
#   make test   set everything up, then run the tests (pytest, nbval over every notebook, the student versions)
# Everything lives in $(VENV); nothing is downloaded at run time.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
OUT ?= outputs
# make demo THREADS=1: torch's CPU threads for the training (empty: torch's choice). On a machine other jobs keep
# busy, torch's threads wait for each other: one thread ran 10x faster there (README, "Time").
THREADS ?=
ARCH := $(shell uname -m)
# torch and torchvision must come from one pip command (a lone torch 2.13 CPU
# build does not import beside PyPI's torchvision). x86_64: 2.14.1 + 0.29.1.
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
# The venv's bin first, so that Jupyter's "python3" kernel is the venv's python.
# No MPLBACKEND here: kernels must keep matplotlib's inline backend, or executed notebooks hold no figure
# (scripts run headless and pick Agg by themselves).
export PATH := $(abspath $(VENV))/bin:$(PATH)
PAPERMILL := $(PY) -m papermill -k python3 --cwd notebooks

.PHONY: setup demo test student bench ring-effect ablation ablation-ci site site-test gpu-check clean

# setup also writes the student versions (solutions replaced by stubs) into student/, where learners
# work; notebooks already there are never replaced.
setup: $(VENV)/.installed
	@$(PY) -m ringnet_lib.course student notebooks student --quiet

# The test extras include the optional photos extra (dlib's 68 landmarks, 4 s to install): its model was
# trained on iBUG 300-W images, which are for research use only (README).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[notebooks,test,photos]'
	$(PY) -m ringnet_lib.check_kernel
	touch $@

# The main job: the FLAME notebook, the quick training run (06) into $(OUT)/quick (the checkpoint 07 and 08
# use), its evaluation on held-out synthetic identities (07), and the photo demo (08). Training prints its
# progress line (steps, losses, time left) on this terminal while papermill runs the notebook.
demo: setup
	mkdir -p $(OUT)/figures
	$(PAPERMILL) notebooks/01_flame.ipynb $(OUT)/01_flame.ipynb -p figure_dir $(abspath $(OUT))/figures
	$(PAPERMILL) notebooks/06_training.ipynb $(OUT)/06_training.ipynb -p figure_dir $(abspath $(OUT))/figures \
		-p out_dir $(abspath $(OUT))/quick -p max_steps None $(if $(THREADS),-p threads $(THREADS))
	$(PAPERMILL) notebooks/07_evaluation.ipynb $(OUT)/07_evaluation.ipynb -p figure_dir $(abspath $(OUT))/figures \
		-p checkpoint $(abspath $(OUT))/quick/checkpoint.pt
	$(PAPERMILL) notebooks/08_demo.ipynb $(OUT)/08_demo.ipynb -p figure_dir $(abspath $(OUT))/figures \
		-p checkpoint $(abspath $(OUT))/quick/checkpoint.pt -p out_dir $(abspath $(OUT))/demo
	@echo "Executed notebooks (with their figures) in $(OUT)/, checkpoint $(OUT)/quick/checkpoint.pt, figures and metrics in $(OUT)/figures/, demo meshes in $(OUT)/demo/"

test: setup
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider tests notebooks

# Student versions (solutions replaced by stubs) in student/; notebooks already there are never replaced.
student: setup
	$(PY) -m ringnet_lib.course student notebooks student

bench: setup
	$(PY) bench/startup.py
	$(PY) bench/flame_forward.py
	$(PY) bench/render.py
	$(PY) bench/data_loading.py
	$(PY) bench/point_to_mesh.py
	$(PY) bench/demo.py
	$(PY) bench/train_step.py

# The ring's own effect: the same budget with and without the ring loss, and R = 2 and 6, three seeds each
# (about 40 minutes on 2 CPU cores); notebook 07 shows its table and figure.
ring-effect: setup
	$(PY) -m ringnet_lib.ablation --quick --only "ring R=4,no consistency,R=2,R=6" --seeds 0,1,2 \
		--out $(OUT)/ring_effect

# The paper's ablations (R, λ_sc, ring/swap/mean) at equal steps, scored on held-out
# synthetic identities. Paper scale, on a GPU:
#   $(PY) -m ringnet_lib.ablation --paper --device cuda --out $(OUT)/ablation_paper
ablation: setup
	$(PY) -m ringnet_lib.ablation --quick --out $(OUT)/ablation

ablation-ci: setup
	$(PY) -m ringnet_lib.ablation --ci --out $(OUT)/ablation_ci

# The course site (Jupyter Book 1) from freshly executed notebooks, in $(OUT)/site/html; see site/README.md.
# SITE_FLAGS: --smoke (CI mode: every notebook's quick version; implied when CI=true is set, as in CI),
# --executed $(OUT) (reuse make demo's executed notebooks, execute only the others).
SITE_FLAGS ?=
site: $(VENV)/.site-installed
	$(PY) site/build.py --out $(OUT)/site $(SITE_FLAGS)

$(VENV)/.site-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[site]'
	touch $@

# The site in a real headless browser (Debian's chromium, installed with apt-get when missing: needs root):
# every page loads with no console error, shows its figures, renders its maths, keeps solutions collapsed;
# a screenshot of each page in $(OUT)/site/shots/.
site-test: site
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "installing Debian's chromium and chromium-driver (apt-get, as root)"; \
		apt-get update -q && apt-get install -y -q chromium chromium-driver; }
	$(PY) -m pytest -q -p no:cacheprovider site/test_site.py --site $(OUT)/site

# On a GPU machine: the prepared check (train step, renders, a 5-minute paper-preset run, its NoW score).
gpu-check: setup
	bash bench/gpu_check.sh

clean:
	rm -rf $(OUT) .pytest_cache
