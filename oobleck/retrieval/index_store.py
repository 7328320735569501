"""Index folders: a retriever's built index on disk, with a manifest, reloaded without rebuilding.

::

    my.index/
      manifest.json     format, version, kind, settings, passage count, every file's size and sha256
      passages.jsonl    the passages (id, title, text), one per line
      ...               the kind's own files (bm25s matrices, vectors.npy, sub-indexes)

A folder is written next to its target and renamed into place, so a crash never leaves half
an index; an existing folder is only replaced if it is an index. Reading checks the manifest,
every file's size and checksum and the passages, and raises ``RetrievalIndexError`` naming
the problem, so a damaged index never gives silently wrong results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oobleck._folders import replace_folder
from oobleck._version import __version__
from oobleck.errors import RetrievalError, RetrievalIndexError
from oobleck.retrieval.base import Retriever
from oobleck.retrieval.passage import Passage

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "IndexedRetriever", "load_index", "read_index", "read_passages", "write_index"]

INDEX_FORMAT = "oobleck.index"
INDEX_VERSION = 1
MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_index(path: str | os.PathLike[str], *, kind: str, config: dict[str, Any], passages: Sequence[Passage],
                write_files: Callable[[Path], None]) -> Path:  # fmt: skip
    """Write an index folder atomically: ``write_files(folder)`` adds the kind's own files."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise RetrievalIndexError(f"{target} exists and is not an index folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise RetrievalIndexError(f"{target} is a folder that is not an oobleck index; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with open(staging / PASSAGES, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n" for p in passages)
        write_files(staging)
        files = {}
        for file in sorted(staging.rglob("*")):
            if file.is_file():
                files[file.relative_to(staging).as_posix()] = {"bytes": file.stat().st_size, "sha256": _sha256(file)}
        manifest = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": kind, "oobleck_version": __version__,
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "passages": len(passages),
                    "config": config, "files": files}  # fmt: skip
        with open(staging / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_index(path: str | os.PathLike[str], *, kind: str | None = None, verify: bool = True) -> dict[str, Any]:
    """The checked manifest of the index folder ``path`` (of ``kind``, when given)."""
    folder = Path(path)
    if not folder.exists():
        raise RetrievalIndexError(f"no retrieval index at {folder} (was it built and saved there, or moved?)")
    if not folder.is_dir():
        raise RetrievalIndexError(f"{folder} is a file, not a retrieval index folder")
    file = folder / MANIFEST
    if not file.is_file():
        raise RetrievalIndexError(f"{folder} holds no {MANIFEST}; it is not an oobleck retrieval index (or its write was interrupted)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RetrievalIndexError(f"{file} is damaged: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise RetrievalIndexError(f"{file} is not an oobleck retrieval index manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RetrievalIndexError(f"{file}: version is missing or invalid")
    if version > INDEX_VERSION:
        raise RetrievalIndexError(f"{file}: index version {version} is newer than this oobleck reads ({INDEX_VERSION}); upgrade oobleck")
    if kind is not None and manifest.get("kind") != kind:
        raise RetrievalIndexError(f"{folder} holds a {manifest.get('kind')!r} index, not a {kind!r} index")
    files = manifest.get("files")
    if not isinstance(files, dict) or PASSAGES not in files or not isinstance(manifest.get("config"), dict):
        raise RetrievalIndexError(f"{file} lacks its file list or settings")
    if not isinstance(manifest.get("passages"), int):
        raise RetrievalIndexError(f"{file} lacks the passage count")
    root = folder.resolve()
    for name, facts in files.items():
        member = folder / name
        if not member.resolve().is_relative_to(root):  # a manifest names files inside its own folder, nowhere else
            raise RetrievalIndexError(f"index {folder} names a file outside itself: {name!r}")
        if not isinstance(facts, dict) or not member.is_file():
            raise RetrievalIndexError(f"index {folder} is incomplete: {name} is missing")
        if member.stat().st_size != facts.get("bytes"):
            raise RetrievalIndexError(f"index {folder} is damaged: {name} has {member.stat().st_size} bytes, the manifest says {facts.get('bytes')}")
        if verify and _sha256(member) != facts.get("sha256"):
            raise RetrievalIndexError(f"index {folder} is damaged: {name} does not match its checksum")
    return manifest


def read_passages(folder: Path, expected: int) -> list[Passage]:
    """The passages of a checked index folder."""
    passages = []
    with open(folder / PASSAGES, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
                passages.append(Passage(row["text"], id=row["id"], title=row.get("title", "")))
            except (ValueError, KeyError, TypeError) as exc:
                raise RetrievalIndexError(f"{folder / PASSAGES} line {number} is damaged: {exc}") from None
    if len(passages) != expected:
        raise RetrievalIndexError(f"{folder / PASSAGES} holds {len(passages)} passages, the manifest says {expected}")
    return passages


class IndexedRetriever(Retriever):
    """A retriever over passages indexed in this process: builds, saves to and loads from an index folder.

    Subclasses implement ``_settings`` (JSON), ``_write_files(folder)`` and
    ``_from_files(folder, settings, passages)``. ``path`` is the folder it was saved to or
    loaded from; that is what ``to_config`` (and so an artifact) records.
    """

    passages: list[Passage]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.passages)

    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def _write_files(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _from_files(cls, folder: Path, settings: dict[str, Any], passages: list[Passage]) -> IndexedRetriever:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to the folder ``path`` (atomically); later ``load(path)`` needs no rebuild."""
        folder = write_index(path, kind=self.kind, config=self._settings(), passages=self.passages, write_files=self._write_files)
        self.path = folder.resolve()
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> IndexedRetriever:
        """An index saved with ``save``; ``RetrievalIndexError`` when it is missing or damaged."""
        folder = Path(path)
        manifest = read_index(folder, kind=cls.kind or None, verify=verify)
        if not cls.kind:
            return load_index(folder, verify=verify)
        passages = read_passages(folder, manifest["passages"])
        try:
            retriever = cls._from_files(folder, manifest["config"], passages)
        except RetrievalIndexError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RetrievalIndexError(f"index {folder} is damaged: {type(exc).__name__}: {exc}") from None
        retriever.path = folder.resolve()
        return retriever

    def to_config(self) -> dict[str, Any]:
        if self.path is None:
            raise RetrievalError(f"this {type(self).__name__} was built in memory; save its index first: retriever.save('my.index')")
        return {"kind": self.kind, "index": str(self.path)}

    @classmethod
    def from_config(cls, config: Any) -> IndexedRetriever:
        index = config.get("index")
        if not isinstance(index, str) or not index:
            raise RetrievalError(f"a {cls.kind} retriever config needs the index folder ('index'), got {index!r}")
        return cls.load(index)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"{type(self).__name__}(passages={len(self.passages)}{where})"


def load_index(path: str | os.PathLike[str], *, verify: bool = True) -> IndexedRetriever:
    """Load any saved index folder, whatever its kind (BM25, dense, hybrid)."""
    from oobleck.retrieval.base import _KINDS, _load_builtin_kinds

    _load_builtin_kinds()
    manifest = read_index(path, verify=verify)
    cls = _KINDS.get(manifest.get("kind"))  # type: ignore[arg-type]
    if cls is None or not issubclass(cls, IndexedRetriever):
        raise RetrievalIndexError(f"{path} holds an index of unknown kind {manifest.get('kind')!r}")
    return cls.load(path, verify=verify)
