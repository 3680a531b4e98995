"""File parameters: a setting that names a file (or files in a folder) whose content, not only its
path, enters an artifact's key. Annotate the field, in a config section or a stage's Params:

    file: Annotated[str, Digest()]                                # the file itself
    recipes: Annotated[str, Digest("requests.yaml", "backdoor.yaml")]  # files a loader reads in a folder

`config.key_view` replaces such a field's path by {path, sha256 of the content}, so editing a
recipe changes the key of every stage that reads it (and, through input keys, everything after)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional, get_args


@dataclass(frozen=True)
class Digest:
    names: tuple[str, ...] = ()     # files inside the folder the field names; empty: the field names a file

    def __init__(self, *names: str):
        object.__setattr__(self, "names", names)

    def of(self, path: str) -> str:
        """Content hash of what the field names: each file's name and bytes; a missing file hashes as
        missing (preflight reports it before anything runs)."""
        files = [Path(path) / n for n in self.names] if self.names else [Path(path)]
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes() if f.is_file() else b"\0missing")
        return h.hexdigest()[:16]


def digest_of(field) -> Digest | None:
    """The `Digest` a pydantic field is annotated with (`Optional[...]` of one included), or None."""
    marks = list(field.metadata) + [m for arg in get_args(field.annotation) for m in getattr(arg, "__metadata__", ())]
    return next((m for m in marks if isinstance(m, Digest)), None)


FilePath = Annotated[str, Digest()]   # a file whose content is part of the key
OptionalFilePath = Optional[FilePath]
