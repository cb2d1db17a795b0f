# qnets: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# auto: for each notebook, the largest preset whose results are all committed in results/.
PRESET ?= auto
RUNS ?= all
PACK ?= 1
# test, fast: test processes side by side (2 for 2 cores; CI adds one while Slurm runs, whose tests mostly wait on jobs)
WORKERS ?= 2
# venv: TORCH=cpu installs PyTorch's CPU wheels (no CUDA libraries: gigabytes less, for machines without an
# NVIDIA GPU); their versions (x.y.z+cpu) rank above the CUDA build's, so pip picks them from the extra index.
TORCH ?= default
TORCH_INDEX := $(if $(filter cpu,$(TORCH)),--extra-index-url https://download.pytorch.org/whl/cpu)
# The one Jupyter kernel: the committed notebooks name it (qnets.notebooks.KERNEL), the README too.
KERNEL := python3
KERNEL_NAME := Python 3 (qnets)
LAB_ARGS ?=
# results: local (this process) or submitit (Slurm jobs; SLURM=file.json holds the partition, time, ...)
EXECUTOR ?= local
SLURM ?=
# cpu-window: how long a CPU window may train (seconds, or 90m, 5h, 1h30m)
BUDGET ?= 4h
WINDOW := results/campaign/cpu-window
# Beside a running CPU window, torch's OpenMP threads must sleep rather than spin while they wait
# (spinning against the window's threads made the tests 10-17 times slower).
ifneq ($(wildcard $(WINDOW).pid),)
export OMP_WAIT_POLICY ?= PASSIVE
endif
NOTEBOOKS := $(sort $(filter-out %.running.ipynb,$(wildcard notebooks/[0-9][0-9]_*.ipynb)))

.PHONY: help venv test fast figures results data bench lab clean gpu-prepare collect readme cpu-window cpu-window-stop

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

venv: $(STAMP)  ## create .venv and install the project into it (TORCH=cpu: PyTorch's CPU wheels, no CUDA)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[notebooks,test,lab,cluster]" $(TORCH_INDEX)
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_NAME)" >/dev/null
	touch $@

test: $(STAMP)  ## every test, slow ones too (the notebooks re-run to their committed outputs and run at the smoke preset), WORKERS at a time
	$(BIN)/python -m pytest tests -m "slow or not slow" -n $(WORKERS)

fast: $(STAMP)  ## the fast tests only (no tests marked slow), WORKERS at a time
	$(BIN)/python -m pytest tests -n $(WORKERS)

figures: $(STAMP)  ## execute every notebook (PRESET=…) into the committed notebooks and regenerate figures/
	$(BIN)/python -m qnets notebooks --execute --preset $(PRESET) $(NOTEBOOKS)

results: $(STAMP)  ## train experiment configs without notebooks: make results PRESET=paper RUNS=02,05 [PACK=K] [EXECUTOR=submitit SLURM=f.json]
	@test "$(PRESET)" != auto || { echo "make results needs a preset: PRESET=smoke, quick, cpu, gpu-short or paper"; exit 2; }
	$(BIN)/python -m qnets results --preset $(PRESET) --runs $(RUNS) --pack $(PACK) --executor $(EXECUTOR) $(if $(SLURM),--slurm-config $(SLURM))

gpu-prepare: $(STAMP)  ## fill .device-data/ to copy along to a GPU machine without the data: the CIFAR-10 archive (QNETS_CIFAR10, else data/cifar-10-python.tar.gz) and pytest as a zip (see scripts/gpu-*.sh)
	@src="$${QNETS_CIFAR10:-data/cifar-10-python.tar.gz}"; test -f "$$src" || { echo "gpu-prepare: no CIFAR-10 archive at $$src: set QNETS_CIFAR10=<the .tar.gz of python batches, or an image-folder archive>"; exit 2; }; \
		mkdir -p .device-data && cp "$$src" .device-data/cifar10-archive
	rm -rf .device-data/pylib .device-data/pylib.zip
	$(BIN)/python -m pip install --quiet --target .device-data/pylib pytest
	cd .device-data/pylib && rm -rf bin && find . -name __pycache__ -prune -exec rm -rf {} + && \
		$(abspath $(BIN))/python -m zipfile -c ../pylib.zip $$(ls -A)
	rm -rf .device-data/pylib

collect: $(STAMP)  ## after a GPU window: make collect DIR=<folder it returned>; results in, notebooks and README re-rendered
	@test -n "$(DIR)" || { echo "make collect needs DIR=<the folder a campaign run returned>"; exit 2; }
	$(BIN)/python -m qnets campaign collect $(DIR)
	$(MAKE) figures
	$(BIN)/python -m qnets readme

cpu-window: $(STAMP)  ## train the cpu plan in the background, niced, for BUDGET (default 4h), then collect and re-render: make cpu-window BUDGET=5h
	@if [ -f $(WINDOW).pid ] && kill -0 $$(cat $(WINDOW).pid) 2>/dev/null; then \
		echo "a CPU window is already running (pid $$(cat $(WINDOW).pid)); make cpu-window-stop ends it"; exit 2; fi
	@mkdir -p results/campaign
	@PYTHON=$(BIN)/python nohup setsid bash scripts/cpu-window.sh "$(BUDGET)" > $(WINDOW).log 2>&1 < /dev/null & \
		echo $$! > $(WINDOW).pid
	@sleep 2; if ! kill -0 $$(cat $(WINDOW).pid) 2>/dev/null; then \
		rm -f $(WINDOW).pid; cat $(WINDOW).log >&2; exit 2; fi  # it refused to start (e.g. no data): say why
	@echo "CPU window started (pid $$(cat $(WINDOW).pid), budget $(BUDGET)): log in $(WINDOW).log;" \
		"progress: $(BIN)/python -m qnets campaign status --preset cpu; then commit results/, notebooks/, figures/ and the READMEs"

cpu-window-stop:  ## end the running CPU window now: the epoch in flight is lost, every finished epoch collected
	@test -f $(WINDOW).pid && kill -0 $$(cat $(WINDOW).pid) 2>/dev/null || { echo "no CPU window is running"; exit 0; }
	@pid=$$(cat $(WINDOW).pid); kill -TERM $$pid; while kill -0 $$pid 2>/dev/null; do sleep 1; done
	@tail -n 3 $(WINDOW).log

readme: $(STAMP)  ## regenerate the README's result tables and verdicts from results/
	$(BIN)/python -m qnets readme

data: $(STAMP)  ## fetch or convert CIFAR-10 into data/ (set QNETS_CIFAR10 to an archive or folder if offline)
	$(BIN)/python -m qnets data

bench: $(STAMP)  ## time the reference and fast training paths on this machine
	$(BIN)/python -m qnets bench

lab: $(STAMP)  ## JupyterLab on the repository, kernel "Python 3 (qnets)": make lab [LAB_ARGS="--no-browser --port 8890"]
	# .jupyter/: notebooks are saved stripped as make figures commits them (qnets.notebooks.lab_pre_save)
	JUPYTER_CONFIG_PATH="$(CURDIR)/.jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" $(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:  ## remove caches, checkpoints and executed copies (keeps committed results and data/)
	rm -rf .pytest_cache build *.egg-info results/checkpoints
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
