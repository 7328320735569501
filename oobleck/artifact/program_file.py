"""Save and load compiled programs as ``name.oobleck/program.json``.

The file is plain JSON: per predictor, by name, its kind, full signature (field names, types
as text, descriptions, instructions), demos, adapter and LM settings without secrets, plus
provenance. Loading validates everything and never imports, evaluates or unpickles anything
named in the file. A directory is written next to its target and renamed into place, so a
crash never leaves a half-written artifact behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oobleck._folders import replace_folder
from oobleck._json import to_jsonable
from oobleck._version import __version__
from oobleck.adapters import get_adapter
from oobleck.artifact.retrievers import plan_retrievers, retrievers_section, validate_retrievers
from oobleck.errors import ArtifactError, OobleckError, misfit
from oobleck.lm.base import BaseLM
from oobleck.lm.cache import SECRET_KEYS
from oobleck.modules.ensemble import REDUCERS, EnsembleProgram
from oobleck.modules.knn import selector_from_dict, selector_to_dict
from oobleck.modules.module import Module
from oobleck.modules.predict import ChainOfThought, Predict
from oobleck.signatures.signature import Signature

__all__ = ["FORMAT", "SCHEMA_VERSION", "load_program", "read_manifest", "save_program"]

FORMAT = "oobleck.program"
SCHEMA_VERSION = 1
PROGRAM_FILE = "program.json"
SOFT_PROMPT_DIR = "soft_prompts"
_KINDS: dict[str, type[Predict]] = {"Predict": Predict, "ChainOfThought": ChainOfThought}


def _predictor_state(predictor: Predict) -> dict[str, Any]:
    lm = predictor.lm
    adapter = predictor.adapter
    adapter_name = adapter if isinstance(adapter, str) or adapter is None else getattr(adapter, "name", None)
    return {
        "kind": getattr(predictor, "kind", "Predict") if type(predictor) in _KINDS.values() else "Predict",
        "class": type(predictor).__name__,
        "signature": predictor.signature.to_dict(),
        "demos": [to_jsonable(dict(d)) for d in predictor.demos],
        "adapter": adapter_name,
        "config": to_jsonable({k: v for k, v in predictor.config.items() if str(k).lower() not in SECRET_KEYS}),
        "lm": lm.describe() if isinstance(lm, BaseLM) else None,
        **({"demo_selector": selector_to_dict(predictor.demo_selector)} if predictor.demo_selector is not None else {}),
    }


def _soft_prompt_file(name: str) -> str:
    """Where a predictor's soft prompt tensors live inside the artifact folder."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "predictor"
    return f"{SOFT_PROMPT_DIR}/{safe}.safetensors"


def save_program(program: Module, path: str | os.PathLike[str], *, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``program`` to the folder ``path`` atomically; returns the folder."""
    if not isinstance(program, Module):
        raise ArtifactError(f"only an ob.Module can be saved, not {type(program).__name__}")
    target = Path(path)
    predictors = program.named_predictors()
    if not predictors:
        raise ArtifactError(f"{type(program).__name__} has no predictors to save")
    states = {name: _predictor_state(p) for name, p in predictors}
    soft = {name: p.soft_prompt for name, p in predictors if p.soft_prompt is not None}
    for name, prompt in soft.items():
        states[name]["soft_prompt"] = prompt.manifest(_soft_prompt_file(name))
    document = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "oobleck_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "program": {"class": type(program).__name__, "predictors": states},
        "provenance": to_jsonable(dict(provenance or {})),
    }
    if isinstance(program, EnsembleProgram):
        document["program"]["ensemble"] = _ensemble_section(program, [name for name, _ in predictors])
    retrievers = retrievers_section(program, target)  # each Retrieve's k and retriever config (index location, not corpus)
    if retrievers:
        document["program"]["retrievers"] = retrievers
    text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. from a "\ud800" escape) only survive as JSON escapes
        text = json.dumps(document, indent=2, ensure_ascii=True, sort_keys=False) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with open(staging / PROGRAM_FILE, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if soft:
            (staging / SOFT_PROMPT_DIR).mkdir()
            for name, prompt in soft.items():
                prompt.save_tensors(staging / _soft_prompt_file(name))
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_into_place(staging: Path, target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ArtifactError(f"{target} exists and is not an artifact folder")
    if target.exists() and not (target / PROGRAM_FILE).is_file() and any(target.iterdir()):
        # Replacing the folder deletes what is in it: only ever do that to an artifact.
        raise ArtifactError(f"{target} is a folder that is not an oobleck artifact; refusing to overwrite it")
    replace_folder(staging, target)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``program.json`` of an artifact folder (or the file itself)."""
    location = Path(path)
    file = location / PROGRAM_FILE if location.is_dir() else location
    if not location.exists():
        raise ArtifactError(f"no artifact at {location}")
    if not file.is_file():
        raise ArtifactError(f"{location} is a folder but holds no {PROGRAM_FILE}; is it an oobleck artifact?")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {file}: {exc}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ArtifactError(f"{file} is not UTF-8 text; it is not an oobleck artifact") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{file} is not valid JSON (truncated or damaged?): {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. a 5000-digit number or absurd nesting
        raise ArtifactError(f"{file} is not a readable program file: {exc}") from None
    _validate(document, file)
    return document


def _fail(file: Path, message: str) -> ArtifactError:
    return ArtifactError(f"{file}: {message}")


def _validate(document: Any, file: Path) -> None:
    if not isinstance(document, dict):
        raise _fail(file, "the top level must be a JSON object")
    if document.get("format") != FORMAT:
        raise _fail(file, f"not an oobleck program (format is {document.get('format')!r}, expected {FORMAT!r})")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(file, "schema_version is missing or not an integer")
    if version < 1:
        raise _fail(file, f"schema_version {version} is not a valid version")
    if version > SCHEMA_VERSION:
        raise _fail(file, f"schema_version {version} is newer than this oobleck ({__version__}) reads ({SCHEMA_VERSION}); upgrade oobleck")
    program = document.get("program")
    if not isinstance(program, dict) or not isinstance(program.get("predictors"), dict) or not program["predictors"]:
        raise _fail(file, "'program.predictors' must be a non-empty object")
    for name, state in program["predictors"].items():
        where = f"predictor {name!r}"
        if not isinstance(state, dict):
            raise _fail(file, f"{where} must be an object")
        kind = state.get("kind")
        if not isinstance(kind, str) or kind not in _KINDS:
            raise _fail(file, f"{where} has unknown kind {state.get('kind')!r}; known: {sorted(_KINDS)}")
        signature = state.get("signature")
        if not isinstance(signature, dict) or not isinstance(signature.get("fields"), list):
            raise _fail(file, f"{where} has no valid signature")
        for entry in signature["fields"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("type"), str):
                raise _fail(file, f"{where}: each signature field needs a string 'name' and 'type'")
        if not isinstance(signature.get("instructions", ""), str):
            raise _fail(file, f"{where}: instructions must be text")
        demos = state.get("demos", [])
        if not isinstance(demos, list) or not all(isinstance(d, dict) for d in demos):
            raise _fail(file, f"{where}: demos must be a list of objects")
        adapter = state.get("adapter")
        if adapter is not None and not isinstance(adapter, str):
            raise _fail(file, f"{where}: adapter must be a name")
        if not isinstance(state.get("config", {}), dict):
            raise _fail(file, f"{where}: config must be an object")
        if state.get("lm") is not None and not isinstance(state.get("lm"), dict):
            raise _fail(file, f"{where}: lm must be an object")
        if state.get("demo_selector") is not None:
            try:
                selector_from_dict(state["demo_selector"])
            except ArtifactError as exc:
                raise _fail(file, f"{where}: {exc}") from None
        if state.get("soft_prompt") is not None:
            _validate_soft_prompt(state["soft_prompt"], where, file)
    if "ensemble" in program:
        _validate_ensemble(program, file)
    if "retrievers" in program:
        validate_retrievers(program["retrievers"], lambda message: _fail(file, message))
    if not isinstance(document.get("provenance", {}), dict):
        raise _fail(file, "provenance must be an object")


def _validate_soft_prompt(entry: Any, where: str, file: Path) -> None:
    from oobleck.lm.soft_prompt import METHODS

    if not isinstance(entry, dict):
        raise _fail(file, f"{where}: soft_prompt must be an object")
    name = entry.get("file")
    if not isinstance(name, str) or not re.fullmatch(rf"{SOFT_PROMPT_DIR}/[A-Za-z0-9_.-]+\.safetensors", name) or ".." in name:
        raise _fail(file, f"{where}: soft_prompt.file must name a .safetensors file in {SOFT_PROMPT_DIR}/, not {name!r}")
    if entry.get("method") not in METHODS:
        raise _fail(file, f"{where}: soft_prompt.method {entry.get('method')!r} is not one of {', '.join(METHODS)}")
    for key in ("base_model", "base_sha256"):
        if not isinstance(entry.get(key), str):
            raise _fail(file, f"{where}: soft_prompt.{key} must be text")
    if not isinstance(entry.get("config"), dict):
        raise _fail(file, f"{where}: soft_prompt.config must be an object")
    labels = entry.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise _fail(file, f"{where}: soft_prompt.labels must be a list of text")


def _soft_prompt(state: dict[str, Any], file: Path) -> Any:
    """The predictor's saved soft prompt (tensors read and checked against their sha256), or None."""
    entry = state.get("soft_prompt")
    if entry is None:
        return None
    from oobleck.lm.soft_prompt import SoftPromptState

    try:
        return SoftPromptState.from_manifest(entry, file.parent)
    except ArtifactError as exc:
        raise _fail(file, str(exc)) from None


def _signature(state: dict[str, Any], name: str, file: Path) -> type[Signature]:
    try:
        return Signature.from_dict(state["signature"])
    except OobleckError as exc:
        raise _fail(file, f"predictor {name!r} has an invalid signature: {exc}") from None


def _adapter(state: dict[str, Any], name: str, file: Path) -> str | None:
    """The saved adapter name, checked now so a bad one fails at load rather than at the first call."""
    adapter = state.get("adapter")
    if adapter:
        try:
            get_adapter(adapter)
        except OobleckError:
            raise _fail(file, f"predictor {name!r} names unknown adapter {adapter!r}") from None
    return adapter or None


def _build_predictor(state: dict[str, Any], name: str, file: Path) -> Predict:
    signature = _signature(state, name, file)
    if not signature.input_fields or not signature.output_fields:
        raise _fail(file, f"predictor {name!r} needs at least one input and one output field")
    predictor = Predict(signature, adapter=_adapter(state, name, file), demos=state.get("demos", []))
    predictor.config = dict(state.get("config", {}))  # set after construction: a key such as "signature" is just a setting
    if state["kind"] == "ChainOfThought":
        predictor.__class__ = ChainOfThought  # the stored signature already holds the reasoning field
    predictor.demo_selector = _demo_selector(state, name, file, signature)
    predictor.soft_prompt = _soft_prompt(state, file)
    return predictor


def _demo_selector(state: dict[str, Any], name: str, file: Path, signature: type[Signature]) -> Any:
    """The predictor's saved per-call demo selector (e.g. kNN), or None; checked against its inputs."""
    if state.get("demo_selector") is None:
        return None
    try:
        return selector_from_dict(state["demo_selector"], list(signature.input_fields))
    except ArtifactError as exc:
        raise _fail(file, f"predictor {name!r}: {exc}") from None


def load_program(path: str | os.PathLike[str], program: Module | None = None, *, lm: BaseLM | str | None = None) -> Module:
    """Load an artifact; match saved predictors to ``program``'s by name.

    Without ``program``, an artifact of one predictor loads as that ``Predict`` or
    ``ChainOfThought``; one of several predictors needs the user's Module passed in.
    ``lm`` (an LM or an id) is set on every predictor.
    """
    file = Path(path)
    file = file / PROGRAM_FILE if file.is_dir() else file
    document = read_manifest(path)
    saved: dict[str, dict[str, Any]] = document["program"]["predictors"]
    ensemble = document["program"].get("ensemble")
    if ensemble is not None or isinstance(program, EnsembleProgram):
        program, saved = _ensemble_to_load(program, ensemble, saved, document["program"].get("class", "Module"), file)
    if program is None:
        if len(saved) != 1:
            raise ArtifactError(
                f"{file} holds a {document['program'].get('class', 'Module')} with predictors {sorted(saved)}; "
                "pass the program object: ob.load(path, program=MyProgram())"
            )
        (name, state), = saved.items()
        result: Module = _build_predictor(state, name, file)
        plan_retrievers(None, document["program"].get("retrievers"), file.parent, file)
    else:
        if not isinstance(program, Module):
            raise ArtifactError(f"program must be an ob.Module, not {type(program).__name__}")
        result = program
        own = dict(program.named_predictors())
        differences = misfit((sorted(set(saved) - set(own)), "saved predictor(s) {} are not in the program"),
                             (sorted(set(own) - set(saved)), "program predictor(s) {} are not in the file"))  # fmt: skip
        if differences:
            raise ArtifactError(
                f"{file} does not fit {type(program).__name__}: {differences} "
                f"(saved {sorted(saved)}, program {sorted(own)})"
            )
        # Check every predictor before changing any, so a bad file leaves the program as it was.
        planned = []
        selectors = []
        for name, state in saved.items():
            predictor = own[name]
            signature = _signature(state, name, file)
            if list(signature.fields) != list(predictor.signature.fields):
                raise ArtifactError(
                    f"{file}: predictor {name!r} was saved with fields {list(signature.fields)} "
                    f"but the program's has {list(predictor.signature.fields)}"
                )
            adapter = _adapter(state, name, file) if predictor.adapter is None else predictor.adapter
            planned.append((predictor, signature.instructions, state.get("demos", []), adapter))
            selectors.append((predictor, _demo_selector(state, name, file, signature), _soft_prompt(state, file)))
        apply_retrievers = plan_retrievers(program, document["program"].get("retrievers"), file.parent, file)
        for predictor, instructions, demos, adapter in planned:
            predictor.signature = predictor.signature.with_instructions(instructions)
            predictor.demos = [dict(d) for d in demos]
            predictor.adapter = adapter
        for predictor, selector, soft_prompt in selectors:
            predictor.demo_selector = selector
            predictor.soft_prompt = soft_prompt
        apply_retrievers()
    if lm is not None:
        from oobleck.lm.lm import LM

        result.set_lm(LM(lm) if isinstance(lm, str) else lm)
    for predictor in result.predictors():  # a soft prompt on another model than its own is refused now, not at the first call
        if predictor.soft_prompt is not None and predictor.lm is not None:
            predictor.resolve_lm()
    if ensemble is not None and isinstance(result, EnsembleProgram):  # the file's settings, once everything fitted
        result.reducer, result.size, result.seed = ensemble["reducer"], ensemble.get("size"), ensemble.get("seed", 0)
    result.compile_info = document.get("provenance") or {}
    return result


# -- ensembles ---------------------------------------------------------------------------------
# An EnsembleProgram saves its members' predictors by dotted name ("members.0.step") like any
# program, plus ``program.ensemble``: the reducer's registered name, member count, size, seed.


def _member_index(name: str) -> int | None:
    """``i`` for a predictor named ``members.i`` or ``members.i.<path>``, else ``None``."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "members" and parts[1].isdigit() and str(int(parts[1])) == parts[1]:
        return int(parts[1])
    return None


def _ensemble_section(program: EnsembleProgram, names: list[str]) -> dict[str, Any]:
    reducer = program.reducer_name
    if reducer is None:
        shown = getattr(program.reducer, "__name__", type(program.reducer).__name__)
        raise ArtifactError(
            f"cannot save this EnsembleProgram: its reducer {shown!r} is a function, and an artifact never names code to "
            f"import; use a named reducer ({', '.join(sorted(REDUCERS))}) to save it, or save each member on its own"
        )
    outside = [n for n in names if _member_index(n) is None]
    if outside:
        raise ArtifactError(f"cannot save this {type(program).__name__}: predictors {outside} are not inside a member")
    for i, member in enumerate(program.members):
        if isinstance(member, EnsembleProgram):
            raise ArtifactError(f"cannot save this EnsembleProgram: member {i} is itself an ensemble; save a flat ensemble instead")
        if not any(_member_index(n) == i for n in names):
            raise ArtifactError(f"cannot save this EnsembleProgram: member {i} ({type(member).__name__}) has no predictors of its own "
                                "(does it share them with another member? build members with program.deepcopy())")  # fmt: skip
    return {"reducer": reducer, "members": len(program.members), "size": program.size, "seed": program.seed,
            "member_classes": [type(m).__name__ for m in program.members]}  # fmt: skip


def _validate_ensemble(program: dict[str, Any], file: Path) -> None:
    section = program["ensemble"]
    if not isinstance(section, dict):
        raise _fail(file, "'program.ensemble' must be an object")
    reducer, count, size, seed = section.get("reducer"), section.get("members"), section.get("size"), section.get("seed", 0)
    if not isinstance(reducer, str) or reducer not in REDUCERS:
        raise _fail(file, f"ensemble reducer {reducer!r} is not a named reducer; known: {sorted(REDUCERS)}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise _fail(file, f"ensemble 'members' must be a positive integer, not {count!r}")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= count):
        raise _fail(file, f"ensemble size must be null or an integer from 1 to {count}, not {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _fail(file, f"ensemble seed must be an integer, not {seed!r}")
    classes = section.get("member_classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != count or not all(isinstance(c, str) for c in classes)):
        raise _fail(file, f"ensemble 'member_classes' must list {count} class names")
    indices = [_member_index(name) for name in program["predictors"]]
    stray = [name for name, i in zip(program["predictors"], indices) if i is None or i >= count]
    if stray:
        raise _fail(file, f"ensemble of {count} members holds predictors {stray} outside 'members.0' .. 'members.{count - 1}'")
    empty = sorted(set(range(count)) - set(indices))
    if empty:
        raise _fail(file, f"ensemble members {empty} have no saved predictors")


def _ensemble_to_load(program: Module | None, section: dict[str, Any] | None, saved: dict[str, dict[str, Any]], saved_class: str,
                      file: Path) -> tuple[Module, dict[str, dict[str, Any]]]:  # fmt: skip
    """The EnsembleProgram to load an ensemble file into, and the saved predictors named to fit it.

    The program passed may be an EnsembleProgram of the same size, one member program (copied
    once per member) or nothing, when every member saved a single predictor.
    """
    if section is None:
        raise ArtifactError(f"{file} holds a single {saved_class}, not an ensemble; load it into one member program, not an EnsembleProgram")
    count = section["members"]
    settings = {"size": section.get("size"), "seed": section.get("seed", 0)}
    if isinstance(program, EnsembleProgram):
        if len(program.members) != count:
            raise ArtifactError(f"{file} holds an ensemble of {count} members but the EnsembleProgram passed has {len(program.members)}")
        return program, saved
    if program is not None:
        if not isinstance(program, Module):
            raise ArtifactError(f"program must be an ob.Module, not {type(program).__name__}")
        return EnsembleProgram([program.deepcopy() for _ in range(count)], section["reducer"], **settings), saved
    names = [[name for name in saved if _member_index(name) == i] for i in range(count)]
    if any(len(member) != 1 for member in names):
        raise ArtifactError(
            f"{file} holds an ensemble of {count} programs with predictors {sorted(saved)}; pass one member program: "
            "ob.load(path, program=MyProgram())"
        )
    members: list[Module] = [_build_predictor(saved[member[0]], member[0], file) for member in names]
    renamed = {f"members.{i}": saved[member[0]] for i, member in enumerate(names)}
    return EnsembleProgram(members, section["reducer"], **settings), renamed
