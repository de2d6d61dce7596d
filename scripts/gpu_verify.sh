#!/usr/bin/env bash
# Single-GPU part of the executor's verify suite, with NCCL on one GPU: runs each scenario
# on the torch executor and through the simulator and prints predicted vs measured.
#   scripts/gpu_verify.sh            # the GPU scenarios of examples/verify/gpu + the tiny single-process plan
#   PYTHON=/path/to/python scripts/gpu_verify.sh
# Needs a CUDA build of torch and simplan's dependencies in $PYTHON's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch ' + torch.__version__)"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
# the tiny plan predicted with the GPU's profile, then the GPU scenarios (their own profile)
"$PYTHON" -m simplan.cli verify examples/verify/01-single.yaml --device cuda --hardware h100-sxm-80gb \
    --steps "$STEPS" --warmup "$WARMUP" --max-ranks 1
"$PYTHON" -m simplan.cli verify examples/verify/gpu/*.yaml --device cuda --steps "$STEPS" --warmup "$WARMUP" \
    --max-ranks 1 "$@"
