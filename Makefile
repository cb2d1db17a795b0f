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
# results: local (this process) or submitit (Slurm jobs; SLURM=file.json holds the partition, time, ...)
EXECUTOR ?= local
SLURM ?=
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: help venv test unit nbval figures results data bench lab clean gpu-prepare collect readme

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(STAMP)  ## create .venv and install the project into it
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[notebooks,test,cluster]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (qnets)" >/dev/null
	touch $@

test: $(STAMP)  ## unit tests, then every notebook checked with nbval and run with the smoke preset
	$(BIN)/python -m pytest tests
	$(BIN)/python -m qnets notebooks --check $(NOTEBOOKS)

figures: $(STAMP)  ## execute every notebook (PRESET=…) into the committed notebooks and regenerate figures/
	$(BIN)/python -m qnets notebooks --execute --preset $(PRESET) $(NOTEBOOKS)

results: $(STAMP)  ## train experiment configs without notebooks: make results PRESET=paper RUNS=02,05 [PACK=K] [EXECUTOR=submitit SLURM=f.json]
	@test "$(PRESET)" != auto || { echo "make results needs a preset: PRESET=quick, gpu-short or paper"; exit 2; }
	$(BIN)/python -m qnets results --preset $(PRESET) --runs $(RUNS) --pack $(PACK) --executor $(EXECUTOR) $(if $(SLURM),--slurm-config $(SLURM))

gpu-prepare:  ## copy the CIFAR-10 archive into .device-data/, which travels to a GPU machine (see scripts/gpu-window.sh)
	mkdir -p .device-data
	cp "$${QNETS_CIFAR10:-../shared/data/cifar10/cifar10-jpeg.tar.xz}" .device-data/cifar10-jpeg.tar.xz

collect: $(STAMP)  ## after a GPU window: make collect DIR=<folder it returned>; results in, notebooks and README re-rendered
	@test -n "$(DIR)" || { echo "make collect needs DIR=<the folder a campaign run returned>"; exit 2; }
	$(BIN)/python -m qnets campaign collect $(DIR)
	$(MAKE) figures
	$(BIN)/python -m qnets readme

readme: $(STAMP)  ## regenerate the README's result tables and verdicts from results/
	$(BIN)/python -m qnets readme

data: $(STAMP)  ## fetch or convert CIFAR-10 into data/ (set QNETS_CIFAR10 to an archive or folder if offline)
	$(BIN)/python -m qnets data

bench: $(STAMP)  ## time the reference and fast training paths on this machine
	$(BIN)/python -m qnets bench

lab: $(STAMP)  ## JupyterLab with the project's kernel registered as "qnets"
	$(BIN)/python -m pip install -q -e ".[lab]"
	$(BIN)/python -m ipykernel install --sys-prefix --name qnets --display-name "qnets" >/dev/null
	$(BIN)/jupyter lab notebooks

clean:  ## remove caches, checkpoints and executed copies (keeps committed results and data/)
	rm -rf .pytest_cache build *.egg-info results/checkpoints
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
