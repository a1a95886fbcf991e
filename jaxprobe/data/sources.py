"""What a prepared dataset was built from, so a changed download is never mistaken for the one already built.

A dataset built from a manual download records every input file its layout read (the samples' images plus split
lists or npz archives), by path relative to the manual dir, with size, modification time and SHA-256. Before a
prepared dataset is reused, the layout is read again (names only, no decoding) and compared with the record:
files added, removed, or whose content changed make ``data.build`` refuse with what changed and how to rebuild.
Size and mtime are a shortcut: a file whose size differs has changed; one whose mtime alone differs (a copy, a
``touch``) is hashed again and counts as changed only if its content did. A copy of the same download in
another folder therefore matches; an edited, added or removed image never does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from jaxprobe.data.samples import Layout

SOURCE_KEY = "source"  # key of the record in the prepared dataset's metadata
SHOWN = 3  # file names shown per kind of change


def input_files(layout: Layout) -> list[Path]:
    """Every file the layout's samples and bookkeeping were read from (callable sources are not files)."""
    files = [sample.source for samples in layout.splits.values() for sample in samples
             if isinstance(sample.source, Path)]
    return sorted(set(files) | set(layout.inputs))


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _relative(path: Path, root: Path) -> str:
    """Path below the manual dir (symlinks are not followed: a linked image keeps its name in the tree)."""
    return Path(os.path.relpath(path.absolute(), root.absolute())).as_posix()


def describe(files: list[Path], root: Path) -> dict:
    """The record kept with a prepared dataset: ``{"root": ..., "files": {relative path: [size, mtime_ns, sha]}}``."""
    entries = {}
    for path in files:
        stat = path.stat()
        entries[_relative(path, root)] = [stat.st_size, stat.st_mtime_ns, file_sha256(path)]
    return {"root": str(root.absolute()), "files": entries}


def content_digest(record: dict) -> str:
    """One hash of what the dataset holds (names and contents, not times or folder): for feature fingerprints."""
    lines = sorted(f"{name}\t{entry[2]}" for name, entry in record["files"].items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class SourceChanges:
    """Relative paths of input files added, removed and changed in content since the record was made."""

    added: list[str]
    removed: list[str]
    modified: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def describe(self) -> str:
        parts = []
        for word, names in (("added", self.added), ("removed", self.removed), ("changed", self.modified)):
            if names:
                shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
                parts.append(f"{len(names)} {word} ({shown})")
        return "; ".join(parts)


def _changed(path: Path, entry: list) -> bool:
    size, mtime_ns, sha = entry
    stat = path.stat()
    if stat.st_size != size:
        return True
    return stat.st_mtime_ns != mtime_ns and file_sha256(path) != sha


def compare(record: dict, files: list[Path], root: Path) -> SourceChanges:
    """What differs between the recorded inputs and ``files`` (the inputs a fresh read of the layout finds)."""
    current = {_relative(path, root): path for path in files}
    recorded = record["files"]
    added = sorted(current.keys() - recorded.keys())
    removed = sorted(recorded.keys() - current.keys())
    modified = sorted(name for name in current.keys() & recorded.keys() if _changed(current[name], recorded[name]))
    return SourceChanges(added, removed, modified)
