"""One module per stage; each follows the contract in `pipeline/stage.py` (NAME, VERSION,
Params, Inputs, OUTPUTS, run). No stage module imports another: what two stages share lives
in a named module (pipeline/generation.py, pipeline/training.py, pipeline/data/...)."""
from pipeline.stages import (adversarial, adversarial_sft, backdoor, code_preferences, evaluate, evaluate_code, evaluate_sets,
                             evaluate_start, generate, generate_backdoor, generate_code, post_scratchpad_sft,
                             preferences, probes, red_teamer, redteam, redteam_data, report, reward_model, safety_rl,
                             safety_sft, splits, tokenizer)

STAGES = {m.NAME: m for m in (splits, generate, generate_backdoor, generate_code, preferences, code_preferences,
                              tokenizer, backdoor,
                              reward_model, safety_sft, safety_rl, post_scratchpad_sft, redteam_data, red_teamer,
                              redteam, adversarial, adversarial_sft, evaluate_start, evaluate, evaluate_code,
                              evaluate_sets, probes, report)}
