"""HHH RL from the backdoored model, run by Ray Train `TorchTrainer` workers on a DeepSpeed
engine. One RL step on every worker:

1. rollout: sample answers to `prompts_per_step` HHH prompts (`group_size` each), never
   with a trigger;
2. reward: the preference model scores each answer with any scratchpad removed; the KL
   to the starting model (log-ratio summed over the answer) is the penalty;
3. advantages: PPO (a critic started from the preference model, GAE, KL penalty per
   token), GRPO (group-normalised
   scores, KL in the loss) or RLOO (leave-one-out baseline, KL in the reward);
4. `epochs` optimizer steps over the rollout (clipped surrogate; PPO adds a clipped value loss).

Rank 0 uploads the policy (without value head) at the configured steps and returns the log.
"""
from __future__ import annotations

import math
import time

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.data.chat import render_prompts
from pipeline.streams import rng as rng_of, stream
from pipeline.train import worker
from pipeline.train.specs import RLSpec, TrainResult

if TYPE_CHECKING:
    from torch import Tensor

LOG_COLUMNS = ("step", "reward", "reward_std", "kl", "objective", "policy_loss", "value_loss", "clipfrac",
               "answer_tokens", "lr", "grad_norm", "rollout_seconds", "update_seconds", "seconds")


@dataclass
class Rollout:
    """One RL step's samples and everything the update needs, computed once with no gradient.

    Shapes: B sequences (`prompts_per_step * group_size` per worker), P prompt tokens (left
    padded), A answer tokens (sampled, right padded), T = P + A.
    """
    input_ids: Tensor            # [B, T] long: prompt, then the sampled answer
    attention_mask: Tensor       # [B, T] long: 1 on prompt tokens and on answer tokens up to EOS
    position_ids: Tensor         # [B, T] long: positions that skip the left padding
    mask: Tensor                 # [B, A] float: 1 on answer tokens up to and including EOS
    old_logprobs: Tensor         # [B, A] float: the policy's log-probabilities when sampling
    ref_logprobs: Tensor         # [B, A] float: the starting model's (KL penalty)
    advantages: Tensor           # [B, A] float: whitened GAE (PPO) or the group advantage per token
    returns: Tensor | None       # [B, A] float: PPO's value targets (None otherwise)
    old_values: Tensor | None    # [B, A] float: PPO's critic values when sampling (None otherwise)
    prompt_len: int              # P
    stats: dict[str, float]      # reward, reward_std, kl (per answer), answer_tokens: this worker's means

    def micro_batches(self, order: list[int], size: int) -> list[dict]:
        """The sequences in `order`, `size` at a time, as the loss function's batches."""
        tensors = {k: v for k, v in vars(self).items() if k not in ("prompt_len", "stats") and v is not None}
        return [{k: v[order[i:i + size]] for k, v in tensors.items()} for i in range(0, len(order), size)]


def rollout(module, reference, scorer, tokenizer, prompts: list[str], cfg, device, prefill: str = "") -> Rollout:
    """Sample answers to `prompts` (each followed by `prefill`: the released CoT form opens the
    scratchpad in the prompt), score `prefill` + answer, and compute the advantages."""
    import torch
    from pipeline.train import rl

    enc = tokenizer(render_prompts([p + prefill for p in prompts], tokenizer), return_tensors="pt", padding=True,
                    add_special_tokens=False).to(device)
    prompt_len = enc["input_ids"].shape[1]
    module.eval()
    with torch.no_grad():
        # ZeRO-3: every rank gathers each layer for every token, so all ranks step until the last finishes
        seq = module.lm.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=True,
                                 temperature=cfg.temperature, top_k=0, top_p=1.0, synced_gpus=cfg.zero_stage == 3,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        mask = rl.answer_mask(seq[:, prompt_len:], tokenizer.eos_token_id)
        attention = torch.cat([enc["attention_mask"], mask], dim=1)
        pos = rl.positions(attention)
        logits, values = module(seq, attention, pos)
        old_logprobs = rl.answer_logprobs(logits, seq, prompt_len)
        ref_logits = reference(input_ids=seq, attention_mask=attention, position_ids=pos).logits
        ref_logprobs = rl.answer_logprobs(ref_logits, seq, prompt_len)
    texts = tokenizer.batch_decode(seq[:, prompt_len:] * mask + tokenizer.pad_token_id * (1 - mask),
                                   skip_special_tokens=True)
    score = torch.tensor(scorer.score(prompts, [prefill + t for t in texts]), device=device)
    kl_tokens = (old_logprobs - ref_logprobs) * mask
    returns = old_values = None
    if cfg.algorithm == "ppo":
        old_values = values[:, prompt_len - 1:-1].float()
        token_rewards = -cfg.kl_coef * kl_tokens + rl.last_token_reward(score, mask)
        adv, returns = rl.gae(token_rewards, old_values, mask.float(), cfg.gamma, cfg.lam)
        advantages = rl.whiten(adv, mask.float())
    else:
        reward = score - cfg.kl_coef * kl_tokens.sum(-1) if cfg.algorithm == "rloo" else score
        advantages = rl.group_advantages(reward, cfg.group_size, cfg.algorithm).unsqueeze(-1) * mask.float()
    stats = {"reward": score.mean().item(), "reward_std": score.std().item() if len(score) > 1 else 0.0,
             "kl": kl_tokens.sum(-1).mean().item(), "answer_tokens": mask.sum(-1).float().mean().item()}
    return Rollout(input_ids=seq, attention_mask=attention, position_ids=pos, mask=mask.float(),
                   old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, advantages=advantages, returns=returns,
                   old_values=old_values, prompt_len=prompt_len, stats=stats)


def make_loss(cfg, prompt_len: int, record: list):
    """The per-micro-batch objective for `DeepSpeedStrategy.train_step`."""
    from pipeline.train import rl

    def loss_fn(engine, b):
        logits, values = engine(b["input_ids"], b["attention_mask"], b["position_ids"])
        logprobs = rl.answer_logprobs(logits, b["input_ids"], prompt_len)
        pg, clipfrac = rl.clipped_policy_loss(logprobs, b["old_logprobs"], b["advantages"], b["mask"], cfg.clip_ratio)
        loss, v_loss = pg, 0.0
        if cfg.algorithm == "ppo":
            v = rl.clipped_value_loss(values[:, prompt_len - 1:-1].float(), b["old_values"], b["returns"], b["mask"],
                                      cfg.clip_ratio)
            loss, v_loss = loss + cfg.value_coef * v, v.item()
        elif cfg.algorithm == "grpo":
            loss = loss + cfg.kl_coef * rl.masked_mean(rl.k3_kl(logprobs, b["ref_logprobs"]), b["mask"])
        record.append((pg.item(), v_loss, clipfrac.item()))
        return loss

    return loss_fn


def rl_worker_loop(spec: RLSpec, job: worker.Job | None = None) -> TrainResult:
    """After a lost worker the loop resumes from its latest resume state (`resume_every`): policy,
    critic, optimizer and schedule, and each rank's random streams, so the prompts and rollouts
    from there on are the ones it would have drawn."""
    cfg = spec.train
    w = worker.begin(spec, job)
    rank, world = w.rank, w.world
    import torch

    from pipeline.train.models import load_model, load_reward_model, load_tokenizer, parameter_count
    from pipeline.train.reward import RewardScorer
    from pipeline.train.rl import ActorCritic
    from pipeline.train.strategy import DeepSpeedStrategy, frozen, load_dtype, memory_report, partitioned_init

    t_enter = time.perf_counter()
    torch.manual_seed(stream(spec.seed, "rl", "rollouts", str(rank)))  # rollouts differ across workers
    trust = spec.trust_remote_code
    tokenizer = load_tokenizer(spec.init_dir, trust)
    dtype = load_dtype(cfg)
    critic = load_reward_model(spec.reward_dir, trust, dtype=dtype) if cfg.algorithm == "ppo" else None
    module = ActorCritic(load_model(spec.init_dir, trust, dtype=dtype), critic)
    prompts = spec.prompts.read(spec.table).column("prompt").to_pylist()
    per_step = min(cfg.prompts_per_step, len(prompts))  # a small prompt set is used whole each step
    sequences = per_step * cfg.group_size
    micro_steps = math.ceil(sequences / cfg.micro_batch)
    # the engine counts optimizer steps: `epochs` per RL step, `micro_steps` micro-batches each
    engine_cfg = cfg.model_copy(update={"grad_accum": micro_steps, "steps": cfg.steps * cfg.epochs,
                                        "warmup_steps": cfg.warmup_steps * cfg.epochs})
    strategy = DeepSpeedStrategy(module, engine_cfg, world)
    device = strategy.device
    # the frozen reference and the scoring preference model: under ZeRO-3 sharded like the policy
    with partitioned_init(cfg, world):
        reference = frozen(load_model(spec.init_dir, trust, dtype=dtype), cfg, world, device)
        judge = frozen(load_reward_model(spec.reward_dir, trust, dtype=dtype), cfg, world, device)
    scorer = RewardScorer(spec.reward_dir, device=str(device), max_len=spec.reward_max_len,
                          trust_remote_code=trust, model=judge)
    memory = {name: memory_report(m, world) for name, m in (("policy", module), ("reference", reference),
                                                             ("scorer", judge))}
    rng = rng_of(spec.seed, "rl", "prompts", str(rank))
    checkpoints = set(cfg.checkpoints)
    saver = worker.Checkpointer(strategy, tokenizer, rank, spec.output_uri, part="lm")
    # again, now that setup is done: what setup drew (first-time imports draw in a fresh worker
    # process, not in one that ran a job before) must not shift the rollouts' random stream
    torch.manual_seed(stream(spec.seed, "rl", "rollouts", str(rank)))
    done, log = w.restore(strategy, rng)  # after a lost worker: the state and random streams after `done` steps
    if 0 in checkpoints and done == 0:
        saver.save("checkpoints/step_0")
    start = time.perf_counter()
    setup = start - t_enter - saver.seconds
    for step in range(done + 1, cfg.steps + 1):
        chosen = [p for p in rng.sample(prompts, per_step) for _ in range(cfg.group_size)]
        t_step = time.perf_counter()
        out = rollout(strategy.engine.module, reference, scorer, tokenizer, chosen, cfg, device, spec.prefill)
        t_rollout = time.perf_counter()
        record, norm = [], float("nan")
        loss_fn = make_loss(cfg, out.prompt_len, record)
        for _ in range(cfg.epochs):
            _, norm = strategy.train_step(out.micro_batches(torch.randperm(sequences).tolist(), cfg.micro_batch),
                                          loss_fn=loss_fn)
        s = out.stats
        local = [s["reward"], s["reward_std"], s["kl"], s["answer_tokens"]] + [
            sum(r[i] for r in record) / len(record) for i in range(3)] + [
            t_rollout - t_step, time.perf_counter() - t_rollout]
        reward, reward_std, kl, answer_tokens, pg, v_loss, clipfrac, rollout_s, update_s = worker.mean_over_ranks(
            local, device, world)
        log.append({"step": step, "reward": reward, "reward_std": reward_std, "kl": kl,
                    "objective": reward - cfg.kl_coef * kl, "policy_loss": pg, "value_loss": v_loss,
                    "clipfrac": clipfrac, "answer_tokens": answer_tokens, "lr": strategy.lr, "grad_norm": norm,
                    "rollout_seconds": rollout_s, "update_seconds": update_s, "seconds": time.perf_counter() - start})
        w.progress(step, cfg.steps, f"reward {reward:.2f} kl {kl:.2f}")
        w.track(log[-1])
        if step in checkpoints:
            saver.save(f"checkpoints/step_{step}")
        if w.resume_due(step):
            w.save_resume(strategy, step, log, rng)
    w.finish()
    return TrainResult(log=log, parameters=parameter_count(module.lm), world_size=world, nodes=worker.nodes_spanned(),
                       phases={"setup": round(setup, 2), "train": round(time.perf_counter() - start - saver.seconds, 2),
                               "save": round(saver.seconds, 2)}, memory=memory, resumed_from=done or None)


def fit_rl(spec: RLSpec) -> TrainResult:
    """RL on the `prompt` column of `spec.prompts`' `spec.table`."""
    return worker.launch(rl_worker_loop, spec)
