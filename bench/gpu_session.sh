#!/usr/bin/env bash
# One lent-GPU session: the CUDA tests, the throughput benchmark and the demo-difficulty check, with
# results under $OUT. The device image has torch but not pydicom or grad-cam: they travel as wheels in
# .whl/ (see README, "Benchmarks"). Usage on the device: bash bench/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -25 | tee "$OUT/cuda-tests.log"
timeout 240 python3 bench/throughput.py --device cuda --out "$OUT/throughput-gpu.json" 2>&1 | tee "$OUT/throughput.log"
timeout ${DIFFICULTY_TIMEOUT:-200} python3 bench/demo_difficulty.py --device cuda --contrasts ${CONTRASTS:-0.5,0.7,1.0,1.4} \
  --methods ce,tss-kd --out "$OUT/demo-difficulty-gpu.json" 2>&1 | grep -v -E '^(epoch|run |data:|done:)' | tee "$OUT/difficulty.log"
