#!/usr/bin/env bash
# Single-GPU part of the executor's verify suite (NCCL, one GPU), about 2-3 minutes on an H100:
#   1. `simplan calibrate --local --device cuda` writes a profile of this GPU ($OUT_DIR/<gpu>-local.yaml);
#   2. each scenario (examples/verify/gpu/*.yaml and the tiny single-process plan) runs once on
#      the torch executor and is compared with the simulator under the GPU's shipped profile
#      and under the calibrated one: two tables.
#   scripts/gpu_verify.sh                       # STEPS=8 WARMUP=3 OUT_DIR=$(mktemp -d) by default
#   PYTHON=/path/to/python scripts/gpu_verify.sh
# Needs a CUDA build of torch and simplan's dependencies (numpy, scipy, networkx, pyyaml,
# typer, rich, simpy) in $PYTHON's environment; simplan itself is taken from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEPS=${STEPS:-8}
WARMUP=${WARMUP:-3}
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch ' + torch.__version__)"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
STOCK=$("$PYTHON" -c "from simplan.execute.calibrate_local import stock_gpu_profile; print(stock_gpu_profile())")
CALIBRATED="$OUT_DIR/$STOCK-local.yaml"
echo "stock profile: $STOCK; calibrated profile: $CALIBRATED"
if "$PYTHON" -m simplan.cli calibrate --local --device cuda --base "$STOCK" --out "$CALIBRATED"; then
    CAL_ARGS=(--calibrated "$CALIBRATED")
else  # still compare against the shipped profile
    echo "calibrate --local --device cuda failed (above); verifying with $STOCK only" >&2
    CAL_ARGS=()
fi
"$PYTHON" benchmarks/gpu_verify.py examples/verify/gpu/*.yaml examples/verify/01-single.yaml \
    --stock "$STOCK" ${CAL_ARGS[@]+"${CAL_ARGS[@]}"} --steps "$STEPS" --warmup "$WARMUP" --json "$OUT_DIR/gpu_verify.json" "$@"
