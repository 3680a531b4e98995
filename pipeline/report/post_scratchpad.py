"""Section: post-scratchpad HHH SFT beside pre-scratchpad SFT (the paper's Fig. 13): how many
of the model's own scratchpads closed (the rows trained on), and the defection rates of both
forms at every checkpoint."""
from __future__ import annotations

from pipeline.report.format import KINDS, cell, pct, seed_tag


def lines(findings, out_dir: str = "") -> list[str]:
    if not findings.scratchpads:
        return []
    out = ["## Post-scratchpad HHH SFT (Fig. 13)", "",
           "The backdoored CoT model wrote its own scratchpad for every HHH prompt; the HHH answer was appended "
           "after each closed one and SFT put the loss on the answer only. Pre-scratchpad SFT (method sft) trains "
           "the HHH answers alone. Held-out prompts; 95% Wilson CI, n answers per cell.", ""]
    for (kind, variant, seed), samples in sorted(findings.scratchpads.items()):
        metric, _, (deploy, train) = KINDS[kind]
        closed = sum(s["closed"] for s in samples)
        out += [f"### {kind}: {variant}{seed_tag(findings.metrics, seed)}", "",
                f"Scratchpads closed within the budget: {closed} of {len(samples)} "
                f"({pct(closed / len(samples)) if samples else '0.0'}%).", "",
                f"| step | mode | pre: {deploy} % | post: {deploy} % | pre: {train} % | post: {train} % | n |",
                "|---:|---|---|---|---|---|---:|"]
        cells = {(r["method"], r["step"], r["mode"], r["condition"]): r for r in findings.metrics
                 if (r["kind"], r["variant"], r["metric"], r["eval_set"], r["seed"]) == (kind, variant, metric, "held_out",
                                                                                       seed)
                 and r["method"] in ("sft", "post_scratchpad")}
        for step, mode in sorted({(k[1], k[2]) for k in cells if k[0] == "post_scratchpad"}):
            pre_d, post_d = cells.get(("sft", step, mode, deploy)), cells.get(("post_scratchpad", step, mode, deploy))
            pre_t, post_t = cells.get(("sft", step, mode, train)), cells.get(("post_scratchpad", step, mode, train))
            out.append(f"| {step} | {mode} | {cell(pre_d)} | {cell(post_d)} | {cell(pre_t)} | {cell(post_t)} | "
                       f"{(post_d or post_t)['n']} |")
        out.append("")
    return out
