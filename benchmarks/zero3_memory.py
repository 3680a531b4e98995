"""ZeRO-3 at load time, on real Ray Train workers: a pretrained folder loaded through the training
path (`strategy.partitioned_init`), a few optimizer steps, the partitioned export, and that the
export reloads with the engine's outputs.

    python benchmarks/zero3_memory.py --model artifacts/models/smollm2-135m-instruct [--lora] [--workers 2]

Prints, per rank, the parameter bytes it holds right after loading and after `deepspeed.initialize`
against the whole model's, its peak resident memory, and the largest logit difference between
the engine and the reloaded export. `tests/test_zero3_pretrained.py` runs the same check on a
small folder.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time


def check_loop(config: dict) -> None:
    """Every rank: load under ZeRO-3, measure, train `steps`, export, and (rank 0) report."""
    import os
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import ray.train
    import torch
    import torch.distributed as dist

    from pipeline.config import LoraConfig, TrainConfig
    from pipeline.train import models
    from pipeline.train.strategy import DeepSpeedStrategy, load_dtype, memory_report, parameter_bytes, partitioned_init

    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    lora = LoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj")) if config["lora"] else None
    cfg = TrainConfig(steps=config["steps"], lr=1e-3, warmup_steps=0, micro_batch=2, zero_stage=3, lora=lora,
                      gradient_checkpointing=config["gradient_checkpointing"])
    torch.manual_seed(0)
    t = time.perf_counter()
    with partitioned_init(cfg, world):
        model = models.prepare_for_training(models.load_model(config["model"], dtype=load_dtype(cfg)), cfg)
        loaded = parameter_bytes(model)  # (the model's bytes, this rank's), before DeepSpeed saw it
        if lora is not None:
            model = models.with_lora(model, lora)
    load_seconds = time.perf_counter() - t
    strategy = DeepSpeedStrategy(model, cfg, world)
    memory = memory_report(model, world)
    tok = models.load_tokenizer(config["model"])
    enc = tok([f"Human: question {i} about the weather? Assistant: an answer {i}." for i in range(2 * world)],
              return_tensors="pt", padding=True)
    mine = {k: v[rank * 2:(rank + 1) * 2] for k, v in enc.items()}
    labels = mine["input_ids"].masked_fill(mine["attention_mask"] == 0, -100)
    losses = [strategy.train_step([{**mine, "labels": labels}])[0] for _ in range(cfg.steps)]
    strategy.engine.eval()
    with torch.no_grad():  # a collective forward: every rank gathers each layer
        logits = strategy.engine(**{k: v[:2] for k, v in enc.items()}).logits
    t = time.perf_counter()
    out = strategy.export(tok, rank)
    export_seconds = time.perf_counter() - t
    loaded_all = [None] * world
    dist.all_gather_object(loaded_all, loaded[1])
    if rank == 0:
        torch.save(logits, os.path.join(out, "engine_logits.pt"))  # ours, read back with weights_only
        with open(os.path.join(config["report"]), "w") as f:
            json.dump({"folder": out, "world": world, "model_parameter_bytes": memory["model_parameter_bytes"],
                       "loaded_parameter_bytes": loaded[0], "held_after_load": loaded_all, "ranks": memory["ranks"],
                       "losses": losses, "load_seconds": load_seconds, "export_seconds": export_seconds,
                       "trainable_parameters": models.trainable_count(model)}, f)


def run(model: str, lora: bool = False, workers: int = 2, steps: int = 3, gradient_checkpointing: bool = False) -> dict:
    """Run the check on `workers` Ray Train workers (Ray must be up); returns the report, with
    `max_logit_difference` between the engine and the reloaded export."""
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = tempfile.mktemp(suffix=".json")
    TorchTrainer(check_loop, train_loop_config={"model": model, "lora": lora, "steps": steps, "report": report,
                                                "gradient_checkpointing": gradient_checkpointing},
                 scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(name=f"zero3-check-{time.time_ns()}", storage_path=tempfile.mkdtemp())).fit()
    with open(report) as f:
        out = json.load(f)
    folder = out["folder"]
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok([f"Human: question {i} about the weather? Assistant: an answer {i}." for i in range(2 * workers)],
              return_tensors="pt", padding=True)
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        mine = reloaded(**{k: v[:2] for k, v in enc.items()}).logits
    engine = torch.load(f"{folder}/engine_logits.pt", weights_only=True)
    out["max_logit_difference"] = float((mine - engine).abs().max())
    return out


def main() -> None:
    import ray
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a Hugging Face causal LM folder")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    ray.init(num_cpus=args.workers, include_dashboard=False)
    try:
        out = run(args.model, args.lora, args.workers, args.steps, args.gradient_checkpointing)
    finally:
        ray.shutdown()
    gib = 1024**3
    print(f"model parameters: {out['model_parameter_bytes'] / gib:.3f} GiB over {out['world']} ranks "
          f"(load {out['load_seconds']:.1f} s, export {out['export_seconds']:.1f} s)")
    for r, (after_load, rank) in enumerate(zip(out["held_after_load"], out["ranks"])):
        print(f"rank {r}: holds {after_load / gib:.3f} GiB after loading, {rank['parameter_bytes'] / gib:.3f} GiB "
              f"in the engine ({rank['parameter_bytes'] / out['model_parameter_bytes']:.1%}), "
              f"peak RSS {rank['peak_rss_bytes'] / gib:.2f} GiB")
    print(f"losses {['%.3f' % x for x in out['losses']]}; trainable {out['trainable_parameters']:,}; "
          f"export vs engine: max |logit difference| {out['max_logit_difference']:.2e}")


if __name__ == "__main__":
    main()
