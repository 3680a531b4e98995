"""Issue 19's GPU benchmark, in one call on one GPU, each path against its baseline in the same run:

1. training at 1.1B (the `1b` preset, TinyLlama's shape), sequence 2048, bf16: our training path
   (DeepSpeedStrategy.train_step: the engine, its bf16 and ZeRO settings, our packed batches'
   inputs) against a bare PyTorch loop (the model, fused AdamW, autocast-free bf16 weights);
   tokens/s and MFU = tokens/s x (6N + 12·L·H·S) / peak;
2. generation at 1B: vLLM (where installed) against Hugging Face `generate` on the same prompts,
   every answer forced to `--new-tokens` tokens; new tokens/s.

Weights are random (no download): throughput does not depend on them.

    python benchmarks/gpu_scale.py                       # on the GPU (see benchmarks/gpu_scale.sh)
    python benchmarks/gpu_scale.py --cpu-smoke           # the same code at a toy size on CPU
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_flops(device: str) -> float | None:
    import torch
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def build(preset: str, vocab: int, seq: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.train.models import PRESETS
    p = PRESETS[preset]
    config = LlamaConfig(vocab_size=vocab, hidden_size=p.hidden, num_hidden_layers=p.layers,
                         num_attention_heads=p.heads, num_key_value_heads=max(1, p.heads // 8) if p.heads >= 8 else p.heads,
                         intermediate_size=p.intermediate, max_position_embeddings=max(seq, 2048), tie_word_embeddings=False)
    return LlamaForCausalLM(config), config


def flops_per_token(model, config, seq: int) -> float:
    n = sum(p.numel() for p in model.parameters())
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq


def batches(vocab: int, batch: int, seq: int, steps: int, device: str):
    import torch
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
        yield {"input_ids": ids, "labels": ids.clone(), "use_cache": False}


def bare_loop(args, device: str) -> dict:
    import torch
    model, config = build(args.preset, args.vocab, args.seq)
    model.to(device=device, dtype=torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    return timed(args, device, model, config, lambda b: step_bare(model, opt, b))


def step_bare(model, opt, batch) -> float:
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def our_path(args, device: str) -> dict:
    import torch.distributed as dist

    from pipeline.config import TrainConfig
    from pipeline.train.strategy import DeepSpeedStrategy, partitioned_init
    if not dist.is_initialized():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    cfg = TrainConfig(steps=args.steps, lr=1e-4, warmup_steps=0, micro_batch=args.batch, max_len=args.seq,
                      use_gpu=device == "cuda", bf16=True, zero_stage=args.zero, num_workers=1,
                      gradient_checkpointing=args.gradient_checkpointing)
    with partitioned_init(cfg, 1):
        model, config = build(args.preset, args.vocab, args.seq)
    strategy = DeepSpeedStrategy(model, cfg, 1)
    return timed(args, device, model, config, lambda b: strategy.train_step([b])[0])


def timed(args, device: str, model, config, step) -> dict:
    import torch
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    it = batches(args.vocab, args.batch, args.seq, args.warmup + args.steps, device)
    for _ in range(args.warmup):
        step(next(it))
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        loss = step(next(it))
    float(loss)
    sync()
    seconds = time.perf_counter() - t
    tokens = args.steps * args.batch * args.seq / seconds
    peak = peak_flops(device)
    out = {"tokens_per_s": tokens, "seconds": seconds, "parameters": sum(p.numel() for p in model.parameters())}
    out["mfu"] = tokens * flops_per_token(model, config, args.seq) / peak if peak else None
    if device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 1024**3
        torch.cuda.reset_peak_memory_stats()
    return out


def generation(args, device: str) -> dict:
    import torch
    from transformers import PreTrainedTokenizerFast

    from pipeline.train.models import train_tokenizer
    folder = tempfile.mkdtemp(prefix="gpu-scale-")
    tok: PreTrainedTokenizerFast = train_tokenizer([f"Human: question {i}? Assistant: answer {i}." for i in range(500)],
                                                   args.vocab)
    model, _ = build(args.gen_preset, len(tok), args.seq)
    model.to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    prompts = [f"Human: question {i} about the weather? Assistant:" for i in range(args.prompts)]
    out = {}
    model = model.to(device).eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = time.perf_counter()
    for i in range(0, len(prompts), args.gen_batch):
        enc = tok(prompts[i:i + args.gen_batch], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id)
    sync()
    out["generate_new_tokens_per_s"] = len(prompts) * args.new_tokens / (time.perf_counter() - t)
    del model
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        out["vllm"] = "not installed"
        return out
    llm = LLM(model=folder, dtype="bfloat16", enforce_eager=False, gpu_memory_utilization=0.6)
    params = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:8], params)  # warm-up (graph capture)
    t = time.perf_counter()
    llm.generate(prompts, params)
    out["vllm_new_tokens_per_s"] = len(prompts) * args.new_tokens / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--gen-preset", default="1b")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4, help="sequences per step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--zero", type=int, default=0, help="ZeRO stage of our path (one GPU: 0)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--cpu-smoke", action="store_true", help="toy sizes on CPU: checks the script, measures nothing")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    import torch
    device = "cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu"
    if args.cpu_smoke:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        args.preset = args.gen_preset = "micro"
        args.vocab, args.seq, args.batch, args.steps, args.warmup = 400, 64, 2, 2, 1
        args.prompts, args.gen_batch, args.new_tokens = 8, 4, 8
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "args": vars(args)}
    results["bare"] = bare_loop(args, device)
    results["ours"] = our_path(args, device)
    results["generation"] = generation(args, device)
    b, o, g = results["bare"], results["ours"], results["generation"]
    print(f"device: {results['device']}; training {b['parameters'] / 1e9:.2f}B parameters, sequence {args.seq}, "
          f"{args.batch} sequences per step, bf16")
    for name, r in (("bare PyTorch", b), ("our path (DeepSpeed)", o)):
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"  {name:<22} {r['tokens_per_s']:>10,.0f} tokens/s   MFU {mfu}")
    print(f"  ours / bare: {o['tokens_per_s'] / b['tokens_per_s']:.2f}")
    print(f"generation ({args.prompts} prompts x {args.new_tokens} new tokens): generate "
          f"{g['generate_new_tokens_per_s']:,.0f} new tokens/s; vLLM "
          + (f"{g['vllm_new_tokens_per_s']:,.0f} ({g['vllm_new_tokens_per_s'] / g['generate_new_tokens_per_s']:.1f}x)"
             if "vllm_new_tokens_per_s" in g else g["vllm"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
