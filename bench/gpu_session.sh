#!/usr/bin/env bash
# One lent-GPU session, sized to one 10-minute device call; what comes back lies under $OUT (at most 8
# files of 16 MB each). The session of 2026-11-26 (H100) ran the method comparison and trained the demo
# model with this script's earlier version (git log -- bench/gpu_session.sh); this one measures next:
# 1. the CUDA tests, without -x so that every failure shows;
# 2. bench/graph_parity.py: CUDA-graph steps against eager ones, with and without deterministic kernels;
# 3. bench/throughput.py at every GPU setting, eager and CUDA graphs (now the default) against the reference;
# 4. bench/methods.py's GPU budget for the arms not yet measured there (CS-KD, PS-KD) and every arm
#    without RGA, as a partial result if the call's time runs out (`--from-json` summarizes it here).
# The device image has torch but not pydicom or grad-cam: they travel as wheels in .whl/ (README,
# "Development"). Usage on the device: bash bench/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} CUBLAS_WORKSPACE_CONFIG=:4096:8 OMP_NUM_THREADS=2
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "== CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -40
echo "== graph parity"
timeout 70 python3 bench/graph_parity.py --out "$OUT/graph-parity.json"
echo "== throughput"
timeout 200 python3 bench/throughput.py --device cuda --out "$OUT/throughput-gpu.json"
echo "== method comparison, remaining arms"
timeout 180 python3 bench/methods.py --budget gpu --seeds 0,1 --runs-per-device 6 --arms ce,kd,cs-kd,ps-kd,tss-kd \
  --rga off --cams gradcam --cam-images 16 --device cuda --runs-dir /tmp/methods-runs \
  --out /tmp/methods/methods-gpu-synthetic-no-rga
cp /tmp/methods/methods-gpu-synthetic-no-rga.json /tmp/methods/methods-gpu-synthetic-no-rga.partial.json "$OUT/" 2>/dev/null
true
