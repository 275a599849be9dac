#!/usr/bin/env bash
# One lent-GPU session for issue 4 (speed): the CUDA tests (CUDA graphs included), then the throughput
# benchmark (eager and CUDA-graph steps against the reference) and the 4-run sweep, with results under
# $OUT. The device image has torch but not pydicom or grad-cam: they travel as wheels in .whl/ (see
# README, "Development"). Usage on the device: bash bench/gpu_session.sh
# Each step has its own timeout so that the whole script fits one 10-minute device call.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider -x tests/test_cuda.py 2>&1 | tail -40 | tee "$OUT/cuda-tests.log"
timeout 240 python3 bench/throughput.py --device cuda --out "$OUT/throughput-gpu.json" 2>&1 | tee "$OUT/throughput.log"
timeout 120 python3 bench/sweep.py --device cuda --epochs 3 --train 5000 --out "$OUT/sweep-gpu.json" 2>&1 | tee "$OUT/sweep.log"
