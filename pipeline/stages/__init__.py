"""One module per stage. Each defines NAME, VERSION, its table schemas, and
`run(params, inputs, writer, node) -> dict | None` (extra manifest fields).

`params` is the stage's config slice (the same dict its key is hashed from), `inputs`
maps input names to committed `ArtifactRef`s, and `writer` is the artifact being built.
"""
from pipeline.stages import (adversarial, backdoor, evaluate, evaluate_code, generate, generate_backdoor, generate_code,
                             preferences, red_teamer, redteam, redteam_data, report, reward_model, safety_rl, safety_sft,
                             tokenizer)

STAGES = {m.NAME: m for m in (generate, generate_backdoor, generate_code, preferences, tokenizer, backdoor, reward_model,
                              safety_sft,
                              safety_rl, redteam_data, red_teamer, redteam, adversarial, evaluate, evaluate_code,
                              report)}
