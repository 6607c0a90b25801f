# Two commands set everything up on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# dvc stages and papermill kernels must find the project's Python first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test lab venv clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[pipeline,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (qnnlib)"
	touch $(STAMP)

venv: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/python -m qnnpipeline.claims --update-readme README.md

test: $(STAMP)
	$(BIN)/pytest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
