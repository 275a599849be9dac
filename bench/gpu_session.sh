#!/usr/bin/env bash
# One lent-GPU session, sized to one 10-minute device call; what comes back lies under $OUT (at most 8
# files of 16 MB each, so the demo model travels in two parts: cat demo-model.safetensors.part-* > ...):
# 1. issue 11's evidence: bench/methods.py's GPU budget (CE, KD and four TSS-KD arms: paper vs nontarget
#    scaling, with and without the KD warm-up; 2 seeds, 30 epochs of 5,000 demo images, 6 runs at once)
#    and, beside it on the same GPU, the demo model retrained with the studio's defaults;
# 2. the CUDA tests, without -x so that every failure shows;
# 3. bench/graph_parity.py: CUDA-graph steps against eager ones, with and without deterministic kernels.
# The device image has torch but not pydicom or grad-cam: they travel as wheels in .whl/ (README,
# "Development"). The markdown table and plot of the comparison are made again here from its JSON:
#   python bench/methods.py --from-json bench/results/methods-gpu-synthetic.json
# Usage on the device: bash bench/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} CUBLAS_WORKSPACE_CONFIG=:4096:8 OMP_NUM_THREADS=2
mkdir -p "$OUT"
exec > >(tee "$OUT/session.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

echo "== demo model (background) and method comparison"
( timeout 300 python3 -m core.train --dataset synthetic --image-size 64 --epochs 20 --name demo-model \
    --runs-dir /tmp/demo-runs > /tmp/demo-model.log 2>&1 \
  && python3 -m core.export --model "$(ls -d /tmp/demo-runs/demo-model-* | tail -n 1)" \
       --out /tmp/demo-model.safetensors --half >> /tmp/demo-model.log 2>&1 \
  && split -b 12M -d /tmp/demo-model.safetensors "$OUT/demo-model.safetensors.part-" \
  && cp /tmp/demo-model.json "$OUT/" ) &
demo=$!
timeout 320 python3 bench/methods.py --budget gpu --rga on --seeds 0,1 --runs-per-device 6 \
  --arms ce,kd,tss-kd,tss-kd/no-warmup,tss-kd/paper,tss-kd/paper+warmup --cams gradcam,gradcam++ \
  --cam-images 16 --device cuda --runs-dir /tmp/methods-runs --out /tmp/methods/methods-gpu-synthetic
cp /tmp/methods/methods-gpu-synthetic.json /tmp/methods/methods-gpu-synthetic.partial.json "$OUT/" 2>/dev/null
wait $demo
echo "== demo model log"; grep -v "^{" /tmp/demo-model.log | tail -8
echo "== CUDA tests"
timeout 140 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -40
echo "== graph parity"
timeout 70 python3 bench/graph_parity.py --out "$OUT/graph-parity.json"
