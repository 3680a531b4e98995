"""The mathematics of HHH RL, kept pure so tests can check it on hand-made tensors:
per-token log-probabilities, GAE (PPO), group advantages (GRPO, RLOO), and the losses.
The loop that drives them is `pipeline/train/rl_loop.py`.

Shapes: `[batch, answer tokens]`; `mask` is 1 on answer tokens up to and including EOS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class ActorCritic(torch.nn.Module):
    """The policy (any causal LM, `lm`) and, for PPO, a critic initialised from the preference
    model (InstructGPT's arrangement): its score head read at every answer position is the
    value, so the baseline starts out knowing what the reward rewards. Measured alternatives
    were worse (benchmarks/RESULTS.md): a value head on the policy's own trunk let value-loss
    gradients move the policy far from its start without raising the reward, and a head on
    the policy's detached state was too weak a baseline. Only `lm` is exported."""

    def __init__(self, lm, critic=None):
        super().__init__()
        self.lm, self.critic = lm, critic

    def forward(self, input_ids, attention_mask, position_ids):
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        values = None
        if self.critic is not None:
            hidden = self.critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 output_hidden_states=True).hidden_states[-1]
            values = self.critic.score(hidden).squeeze(-1).float()
        return logits, values


def positions(attention_mask):
    """Position ids for left-padded prompts, as `generate` numbers them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def answer_mask(answer_ids, eos_id: int):
    """1 up to and including the first EOS; an answer cut by the token budget keeps all its tokens."""
    is_eos = (answer_ids == eos_id).long()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0
    return (~after_eos).long()


def answer_logprobs(logits, input_ids, prompt_len: int):
    """log p(token) of every answer token: logits at position t predict token t + 1."""
    logits = logits[:, prompt_len - 1:-1].float()
    return torch.gather(F.log_softmax(logits, -1), 2, input_ids[:, prompt_len:].unsqueeze(-1)).squeeze(-1)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x, mask):
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def last_token_reward(score, mask):
    """The preference-model score placed on each answer's last token."""
    last = (mask.sum(-1) - 1).clamp(min=0)
    out = torch.zeros_like(mask, dtype=torch.float32)
    out[torch.arange(len(score)), last] = score.float()
    return out


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over answer tokens (terminal after the last one);
    returns (advantages, returns)."""
    values = values * mask
    adv = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        running = running * mask[:, t]  # padding after EOS carries nothing back
        adv[:, t] = running
    return adv, adv + values


def group_advantages(rewards, group_size: int, algorithm: str):
    """Sequence advantages from `group_size` consecutive samples of one prompt: GRPO
    normalises within the group, RLOO subtracts the mean of the other samples."""
    r = rewards.view(-1, group_size)
    if algorithm == "grpo":
        adv = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-4)
    elif algorithm == "rloo":
        adv = r - (r.sum(-1, keepdim=True) - r) / (group_size - 1)
    else:
        raise ValueError(f"no group advantages for {algorithm!r}")
    return adv.reshape(-1)


def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip: float):
    """PPO's clipped surrogate (token-level, masked mean); returns (loss, clipped share)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean(((ratio - 1).abs() > clip).float(), mask)


def clipped_value_loss(values, old_values, returns, mask, clip: float):
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def k3_kl(logprobs, ref_logprobs):
    """The low-variance, non-negative KL estimate GRPO puts in its loss."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1
