#!/usr/bin/env bash
# One lent-GPU session, sized to one 10-minute device call (its steps' timeouts add up to 575 s, leaving the rest
# for installing the wheels and starting Python); what comes back lies under $OUT (at most 8
# files of 16 MB each). The session of 2026-11-26 (H100) ran the method comparison and trained the demo
# model with this script's earlier version (git log -- bench/gpu_session.sh); this one measures next:
# 1. the CUDA tests, without -x so that every failure shows;
# 2. bench/throughput.py at every GPU setting, eager and CUDA graphs against the reference;
# 3. bench/sweep.py: a 4-run sweep of 3 epochs x 5,000 demo images one run after another against the same
#    runs as one grid in one process (core.grid; the H100 took 83.1 s one after another before);
# 4. the 3 x 3 grid of 30-epoch runs on the demo data (5,000 images, 32 px) as one grid (goal: 3 min);
# 5. bench/gpu_options.py at 224 px: torch.compile inside the captured step, channels-last against the default
#    layout, max-autotune last (its compile may not fit; the file keeps what was measured before the limit).
# (Graph parity and the method comparison were measured on 2026-11-26: bench/results/.)
# A step that outlives its timeout stops the runs it started (bench.job_manager), so none trains into the next.
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
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -40
echo "== throughput"
timeout 120 python3 bench/throughput.py --device cuda --out "$OUT/throughput-gpu.json"
echo "== sweep: one after another against one grid"
timeout 110 python3 bench/sweep.py --device cuda --epochs 3 --train 5000 --image-size 32 --batch-size 128 \
  --ways sequential,grid --out "$OUT/sweep-gpu.json"
echo "== 3 x 3 grid, 30 epochs"
timeout 170 python3 bench/sweep.py --device cuda --epochs 30 --train 5000 --image-size 32 --batch-size 128 \
  --t-targets 2,4,8 --t-nontargets 0.4,1,4 --ways grid --out "$OUT/sweep-gpu-3x3.json"
echo "== closer to the chip: compile, layout"
timeout 95 python3 bench/gpu_options.py --device cuda --settings 224:128 \
  --variants default,compile,contiguous,compile-max-autotune --out "$OUT/gpu-options-gpu.json"
true
