#!/usr/bin/env bash
# Issue 19's GPU benchmark in one call on a lent GPU (device tool), with .whl/ carried
# (../shared/tools/device-bundle.sh packs ray, deepspeed, datasets and TRL; vLLM is used where the
# machine has it):   bash benchmarks/gpu_scale.sh
# Prints our training path vs a bare PyTorch loop at 1.1B, sequence 2048, bf16 (tokens/s, MFU) and
# vLLM vs generate at 1B (new tokens/s); the output goes to $OUT for benchmarks/RESULTS.md.
set -uo pipefail
bash .whl/install.sh >/dev/null
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python benchmarks/gpu_scale.py --json "$OUT/gpu_scale.json" 2>&1 | grep -v -E "WARN|Warning" | tail -8 | tee "$OUT/gpu_scale.txt"
# both generation engines on the same micro run: greedy verdicts must agree (skips without vLLM)
python -m pytest -q -p no:cacheprovider tests/test_vllm.py -rs 2>&1 | tail -4 | tee "$OUT/vllm_verdicts.txt"
