#!/usr/bin/env bash
# Run on a lent GPU machine (device tool) with .whl/ carried:  bash benchmarks/gpu_check.sh
# 1) the whole graph on one GPU (bf16 DeepSpeed, NCCL, Ray Data actors with num_gpus);
# 2) make bench's ratios on the GPU.  Output goes to $OUT for benchmarks/RESULTS.md.
set -uo pipefail
bash .whl/install.sh >/dev/null
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, ray, deepspeed, transformers; print('torch', torch.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
start=$(date +%s)
python -m pipeline.cli run configs/gpu_check.yaml 2>&1 | grep -v WARN | tail -25 | tee "$OUT/run.txt"
echo "wall $(( $(date +%s) - start ))s" | tee -a "$OUT/run.txt"
python -m pipeline.cli status gpu_check --store /tmp/gpu-store | tee -a "$OUT/run.txt"
cp /tmp/gpu-store/runs/gpu_check/report.md "$OUT/" 2>/dev/null
python benchmarks/bench.py --config configs/gpu_check.yaml --steps 200 --prompts 960 2>&1 | grep -E "^(machine|training|generation|  )" | tee "$OUT/bench.txt"
