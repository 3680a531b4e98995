"""The one supervised loop (backdoor SFT, HHH SFT), run by Ray Train `TorchTrainer` workers.

Every rank reads the training table from the artifact store, keeps its own shard, and
steps a DeepSpeed engine; rank 0 uploads Hugging Face checkpoints at the configured steps
and returns the training log (`Result.return_value`).
"""
from __future__ import annotations

import time

from pipeline.train import worker
from pipeline.train.specs import SFTSpec, TrainResult

LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens", "token_share", "seconds")


def sft_worker_loop(spec: SFTSpec, job: worker.Job | None = None) -> TrainResult:
    cfg = spec.train
    w = worker.begin(spec, job)
    rank, world = w.rank, w.world
    import torch

    from pipeline.data.chat import opened
    from pipeline.train.collate import IGNORE, batches, encode_rows, pack_batch, pad_batch
    from pipeline.train import models
    from pipeline.train.strategy import DeepSpeedStrategy, load_dtype, memory_report, partitioned_init

    t_enter = time.perf_counter()
    phases = {}
    torch.manual_seed(spec.seed)
    tokenizer = models.load_tokenizer(spec.tokenizer_dir, spec.trust_remote_code, spec.chat_template)
    with partitioned_init(cfg, world):  # ZeRO-3: each rank keeps its shard of each weight as it is read
        if spec.init_dir is None:
            model = models.scratch_model(spec.preset, tokenizer, spec.seed)
        else:
            model = models.load_model(spec.init_dir, spec.trust_remote_code, dtype=load_dtype(cfg))
        model = models.prepare_for_training(model, cfg)
        if cfg.lora is not None:
            model = models.with_lora(model, cfg.lora)
    rows = opened(spec.data.read(spec.table).to_pylist(), spec.prefill)[rank::world]
    examples = encode_rows(rows, tokenizer, cfg.max_len)
    phases["data_model"] = time.perf_counter() - t_enter
    strategy = DeepSpeedStrategy(model, cfg, world)
    phases["deepspeed_init"] = time.perf_counter() - t_enter - phases["data_model"]
    memory = memory_report(model, world)
    stream = batches(examples, cfg.micro_batch, spec.seed + rank,
                     length=(lambda e: len(e[0])) if cfg.group_by_length else None)
    # grouped batches differ in loss tokens: weight each by its share (see train_step)
    tokens_per_batch = (cfg.micro_batch * sum(sum(y != IGNORE for y in labels) for _, labels in examples)
                        / len(examples)) if cfg.group_by_length else None
    checkpoints = set(spec.checkpoints)
    saver = worker.Checkpointer(strategy, tokenizer, rank, spec.output_uri)
    done, log = w.restore(strategy, stream=stream)  # after a lost worker: the steps done, their state, the batches on
    if 0 in checkpoints and done == 0:
        saver.save("checkpoints/step_0")
    start = time.perf_counter()
    phases["setup"] = start - t_enter - saver.seconds
    for step in range(done + 1, cfg.steps + 1):
        if cfg.packing:
            packed = [pack_batch(next(stream), tokenizer.pad_token_id, cfg.max_len) for _ in range(cfg.grad_accum)]
            micro = [p.model_inputs() for p in packed]
            counts = {"tokens": sum(p.tokens for p in packed), "positions": sum(p.input_ids.numel() for p in packed)}
        else:
            micro, counts = [pad_batch(next(stream), tokenizer.pad_token_id) for _ in range(cfg.grad_accum)], {}
        log.append(worker.logged_step(strategy, micro, world, step, start, tokens_per_batch=tokens_per_batch,
                                      **counts))
        w.progress(step, cfg.steps, f"loss {log[-1]['loss']:.3f}", every=5)
        w.track(log[-1])
        if step in checkpoints:
            saver.save(f"checkpoints/step_{step}")
        if w.resume_due(step):
            w.save_resume(strategy, step, log)
    if spec.final:
        saver.save("model")
    w.finish()
    phases["save"] = saver.seconds
    phases["train"] = time.perf_counter() - start - saver.seconds
    return TrainResult(log=log, parameters=models.parameter_count(model), world_size=world, nodes=worker.nodes_spanned(),
                       trainable_parameters=models.trainable_count(model),  # adapters only, with LoRA
                       phases={k: round(v, 2) for k, v in phases.items()}, memory=memory,
                       resumed_from=done or None)


def fit_sft(spec: SFTSpec) -> TrainResult:
    """Run the loop in `spec.train.num_workers` TorchTrainer workers; returns rank 0's result."""
    return worker.launch(sft_worker_loop, spec)
