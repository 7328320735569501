"""The ``program.retrievers`` section of an artifact: each ``Retrieve`` module's ``k`` and retriever.

By module name (``"retrieve"``, ``"hops.0.retrieve"``), the retriever's ``to_config()``: its
kind and settings plus, for a local index, the index folder as an absolute path and as a path
relative to the artifact (tried first, so an artifact moved together with its index still
loads). The corpus itself is never copied into the artifact. Loading rebuilds each retriever
from its config and reloads its index; a missing or damaged index is an ``ArtifactError``
that names the module and the folders tried. A ``Retrieve`` that already has a retriever when
its program is loaded keeps it (the user's choice wins, as with adapters).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oobleck._json import to_jsonable
from oobleck.errors import ArtifactError, OobleckError, misfit
from oobleck.modules.module import Module
from oobleck.modules.retrieve import Retrieve, named_retrievers
from oobleck.retrieval.base import retriever_from_config

__all__ = ["plan_retrievers", "retrievers_section", "validate_retrievers"]


def retrievers_section(program: Module, target: Path) -> dict[str, Any] | None:
    """The section to save for ``program`` (None when it has no ``Retrieve``)."""
    found = named_retrievers(program)
    if not found:
        return None
    section: dict[str, Any] = {}
    for name, module in found:
        entry: dict[str, Any] = {"k": module.k, "retriever": None}
        if module.retriever is not None:
            try:
                config = dict(to_jsonable(module.retriever.to_config()))
            except OobleckError as exc:
                raise ArtifactError(f"cannot save the retriever of {name!r}: {exc}") from None
            index = config.get("index")
            if isinstance(index, str):
                absolute = Path(index).resolve()
                config["index"] = str(absolute)
                try:
                    config["index_relative"] = Path(os.path.relpath(absolute, target.resolve())).as_posix()
                except ValueError:  # another drive on Windows: only the absolute path applies
                    pass
            entry["retriever"] = config
        section[name] = entry
    return section


def validate_retrievers(section: Any, fail: Callable[[str], ArtifactError]) -> None:
    if not isinstance(section, dict):
        raise fail("'program.retrievers' must be an object")
    for name, entry in section.items():
        where = f"retriever {name!r}"
        if not isinstance(entry, dict):
            raise fail(f"{where} must be an object")
        k = entry.get("k")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise fail(f"{where}: k must be an integer >= 1, not {k!r}")
        config = entry.get("retriever")
        if config is not None and (not isinstance(config, dict) or not isinstance(config.get("kind"), str)):
            raise fail(f"{where}: 'retriever' must be null or an object with a 'kind'")


def _rebuild(name: str, config: dict[str, Any], folder: Path, file: Path) -> Any:
    config = dict(config)
    tried = []
    index = config.get("index")
    if isinstance(index, str):
        relative = config.pop("index_relative", None)
        options = ([folder / relative] if isinstance(relative, str) else []) + [Path(index)]
        tried = [str(p) for p in dict.fromkeys(options)]
        config["index"] = str(next((p for p in options if p.exists()), options[-1]))
    try:
        return retriever_from_config(config)
    except OobleckError as exc:
        where = f" (looked in: {', '.join(tried)})" if tried else ""
        raise ArtifactError(
            f"{file}: cannot load the {config.get('kind')} retriever of {name!r}{where}: {exc}. Rebuild and save the index "
            "there, or pass a program whose Retrieve already has a retriever"
        ) from None


def plan_retrievers(program: Module | None, section: dict[str, Any] | None, folder: Path, file: Path) -> Callable[[], None]:
    """Check the saved retrievers against ``program`` and load their indexes; returns the step that applies them.

    Nothing in the program changes until the returned function runs, so a bad file leaves the
    program as it was.
    """
    if not section:
        return lambda: None
    if program is None:
        raise ArtifactError(f"{file} holds a program with Retrieve modules {sorted(section)}; pass the program: ob.load(path, program=MyProgram())")
    own = dict(named_retrievers(program))
    differences = misfit((sorted(set(section) - set(own)), "saved Retrieve module(s) {} are not in the program"),
                         (sorted(set(own) - set(section)), "program Retrieve module(s) {} are not in the file"))  # fmt: skip
    if differences:
        raise ArtifactError(f"{file} does not fit {type(program).__name__}: {differences}")
    planned: list[tuple[Retrieve, int, Any]] = []
    for name, entry in section.items():
        module = own[name]
        config = entry.get("retriever")
        retriever = _rebuild(name, config, folder, file) if module.retriever is None and config is not None else module.retriever
        planned.append((module, entry["k"], retriever))

    def apply() -> None:
        for module, k, retriever in planned:
            module.k, module.retriever = k, retriever

    return apply
