"""DSPy interop: bring a DSPy program over, compile it with oobleck, take the result back.

- ``from_dspy``: a DSPy signature (class or string), ``dspy.Predict``, ``dspy.ChainOfThought``
  or user ``dspy.Module`` becomes the oobleck equivalent, demos and instructions included.
- ``to_dspy``: an oobleck program (or a saved artifact) becomes the JSON file that
  ``dspy_program.save("x.json")`` writes, so ``dspy_program.load("x.json")`` gives DSPy the
  same instructions and demos.
- ``import_dspy_json``: a DSPy-saved JSON file (never a pickle) becomes an oobleck program.

Both frameworks name a predictor by where it sits, spelled differently: DSPy writes list items
as ``hops[0]``, dict entries as ``tools['k']`` and a ChainOfThought's predictor as
``step.predict`` (a top-level Predict is ``self``, a top-level ChainOfThought ``predict``);
oobleck writes ``hops.0``, ``tools.k`` and ``step`` (a ChainOfThought is itself a predictor).
``dspy_names`` maps one spelling onto the other.

A user ``dspy.Module`` becomes a ``DSPyProgram``: an oobleck Module with oobleck predictors at
the same attribute paths, whose ``forward`` runs the DSPy module's own ``forward`` on a
per-call shallow copy of it in which those predictors stand where DSPy's were. The user's
DSPy object is never changed. DSPy is imported only by the functions that need live DSPy
objects; writing and reading DSPy's JSON needs no DSPy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oobleck._json import to_jsonable
from oobleck.errors import ArtifactError, ConfigurationError, OobleckError, SignatureError, misfit
from oobleck.modules.ensemble import EnsembleProgram
from oobleck.modules.module import Module
from oobleck.modules.predict import ChainOfThought, Predict
from oobleck.signatures.field import InputField, OutputField
from oobleck.signatures.signature import Signature, default_instructions, make_signature

__all__ = ["DSPyProgram", "dspy_names", "dspy_prefix", "from_dspy", "import_dspy_json", "signature_from_dspy", "to_dspy"]

logger = logging.getLogger("oobleck.interop.dspy")

# LM settings a DSPy predictor's ``config`` may carry that mean the same to oobleck's LMs.
_CONFIG_KEYS = {"temperature", "max_tokens", "top_p", "n", "stop", "seed", "presence_penalty", "frequency_penalty"}
_PLACEHOLDER = re.compile(r"^\$\{(\w+)\}$")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+|[^\W\d_]+")


def _dspy() -> Any:
    """The ``dspy`` package, or a ConfigurationError saying how to install it."""
    try:
        import dspy
    except ImportError as exc:
        raise ConfigurationError(f"DSPy interop needs DSPy: pip install 'oobleck[dspy]' ({exc})") from None
    return dspy


def _is_dspy_object(obj: Any) -> bool:
    """True for DSPy signatures and modules, checked without importing DSPy when it is not loaded."""
    dspy = sys.modules.get("dspy")
    if dspy is None:
        return False
    if isinstance(obj, type):
        return issubclass(obj, (dspy.Signature, dspy.Module))
    return isinstance(obj, dspy.Module)


def dspy_prefix(name: str) -> str:
    """The prefix DSPy gives a field by default (``snake_case`` -> ``"Snake Case:"``)."""
    words = [w for part in name.split("_") for w in _WORD.findall(part)]
    return " ".join(w if w.isupper() else w.capitalize() for w in words) + ":"


# -- DSPy -> oobleck ---------------------------------------------------------------------------


def from_dspy(obj: Any) -> Any:
    """The oobleck equivalent of a DSPy object.

    - a signature class or string (parsed by DSPy) -> an ``ob.Signature`` class with the same
      fields, types, descriptions and instructions;
    - ``dspy.Predict`` / ``dspy.ChainOfThought`` -> ``ob.Predict`` / ``ob.ChainOfThought`` with
      the same signature, demos and LM settings;
    - a user ``dspy.Module`` -> a ``DSPyProgram`` whose predictors keep their attribute paths.

    Other DSPy modules (ReAct, ProgramOfThought, Refine, retrievers, tools, ...) and DSPy-only
    field types (images, audio, history, tools) raise a ``ConfigurationError`` or
    ``SignatureError`` naming them. Per-predictor DSPy LMs are not carried over: configure an
    oobleck LM (``ob.configure(lm=...)``).
    """
    dspy = _dspy()
    if isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, dspy.Signature)):
        return signature_from_dspy(obj)
    if isinstance(obj, dspy.Module):
        return _convert(obj, "self", {}, top=True)
    if isinstance(obj, type) and issubclass(obj, dspy.Module):
        raise ConfigurationError(f"from_dspy takes a DSPy module instance: from_dspy({obj.__name__}(...)), not the class")
    raise ConfigurationError(
        f"from_dspy takes a DSPy signature (class or string), dspy.Predict, dspy.ChainOfThought or a dspy.Module, "
        f"not {type(obj).__name__}"
    )


def signature_from_dspy(signature: Any) -> type[Signature]:
    """An ``ob.Signature`` with the DSPy signature's fields, types, descriptions and instructions.

    DSPy's placeholders (description ``${name}``, prefix ``"Name:"``) mean "none given" and
    become oobleck's empty description and no prefix, so a round trip writes them back.
    """
    dspy = _dspy()
    if isinstance(signature, str):
        try:
            signature = dspy.Signature(signature)
        except Exception as exc:  # noqa: BLE001 - DSPy's parser raises ValueError, SyntaxError and friends
            raise SignatureError(f"DSPy cannot parse the signature {signature!r}: {exc}") from None
    if not (isinstance(signature, type) and issubclass(signature, dspy.Signature)):
        raise SignatureError(f"expected a DSPy signature class or string, not {type(signature).__name__}")
    fields: dict[str, Any] = {}
    for name, info in signature.fields.items():
        extra = info.json_schema_extra or {}
        kind = extra.get("__dspy_field_type")
        _check_type(info.annotation, f"{signature.__name__}.{name}")
        desc = extra.get("desc") or ""
        desc = "" if desc == f"${{{name}}}" else str(desc)
        prefix = extra.get("prefix")
        prefix = None if not prefix or prefix == dspy_prefix(name) else str(prefix)
        field = InputField(desc, prefix=prefix) if kind == "input" else OutputField(desc, prefix=prefix)
        fields[name] = (info.annotation, field)
    inputs, outputs = list(signature.input_fields), list(signature.output_fields)
    instructions: str | None = signature.instructions or None
    if instructions == default_instructions(inputs, outputs):
        instructions = None  # oobleck's default is the same text; keep it derived from the fields
    name = signature.__name__ if signature.__name__.isidentifier() else "StringSignature"
    return make_signature(fields, instructions, name=name)


def _check_type(annotation: Any, where: str) -> None:
    """Refuse DSPy's own types (``dspy.Image``, ``dspy.History``, ``dspy.Tool``, ...) anywhere in a type."""
    pending = [annotation]
    while pending:
        tp = pending.pop()
        module = getattr(tp, "__module__", "") or ""
        if isinstance(tp, type) and (module == "dspy" or module.startswith("dspy.")):
            raise SignatureError(
                f"{where} has type {tp.__name__}, a DSPy-specific type oobleck does not support "
                "(images, audio, files, history, tools, code); use text or JSON types"
            )
        pending.extend(typing.get_args(tp))


def _demos(demos: Any) -> list[dict[str, Any]]:
    out = []
    for demo in demos or []:
        values = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
        out.append(to_jsonable(values))
    return out


def _config(predictor: Any, where: str) -> dict[str, Any]:
    config = dict(getattr(predictor, "config", None) or {})
    dropped = sorted(k for k in config if k not in _CONFIG_KEYS)
    if dropped:
        logger.warning("%s: DSPy settings %s have no oobleck equivalent and are left out", where, dropped)
    if getattr(predictor, "lm", None) is not None:
        logger.warning("%s: its DSPy LM is not carried over; oobleck uses the LM you configure", where)
    return {k: v for k, v in config.items() if k in _CONFIG_KEYS}


def _builtin_name(obj: Any, dspy: Any) -> str | None:
    """The DSPy class a module is (or subclasses), other than Module, Predict and ChainOfThought."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        if (module == "dspy" or module.startswith("dspy.")) and cls not in (dspy.Module, dspy.Predict, dspy.ChainOfThought):
            if cls.__name__ in ("BaseModule", "Parameter") or cls is object:
                continue
            return f"dspy.{cls.__name__}"
    return None


def _convert(value: Any, where: str, memo: dict[int, Any], *, top: bool = False, nested: bool = False) -> Any:
    """The oobleck counterpart of one attribute value of a DSPy module, or ``_NOTHING``."""
    if id(value) in memo:
        return memo[id(value)]
    dspy = _dspy()
    from dspy.predict.parameter import Parameter

    result: Any
    if isinstance(value, (dspy.Predict, dspy.ChainOfThought)):
        if type(value) not in (dspy.Predict, dspy.ChainOfThought):
            raise ConfigurationError(
                f"{where} is a {type(value).__name__}, a subclass of dspy.{'Predict' if isinstance(value, dspy.Predict) else 'ChainOfThought'}; "
                "oobleck converts dspy.Predict and dspy.ChainOfThought themselves, whose behaviour it knows"
            )
        result = _predictor(value, where, dspy)
    elif isinstance(value, dspy.Module):
        builtin = _builtin_name(value, dspy)
        if builtin is not None:
            raise ConfigurationError(
                f"{where} is a {builtin}, which oobleck cannot convert (only dspy.Predict, dspy.ChainOfThought and your own "
                "dspy.Module subclasses built from them); write that step as a Predict or ChainOfThought"
            )
        if not top and getattr(value, "_compiled", False):
            raise ConfigurationError(
                f"{where} is a DSPy module marked compiled (frozen), so DSPy leaves its predictors out of saved state; "
                "set its _compiled = False to let oobleck optimize it"
            )
        result = _module(value, where, memo, top=top)
    elif isinstance(value, Parameter):
        raise ConfigurationError(f"{where} is a {type(value).__name__}, a DSPy parameter oobleck cannot convert")
    elif isinstance(value, (list, tuple, dict)):
        if nested:
            if _holds_dspy(value, dspy, Parameter):
                raise ConfigurationError(
                    f"{where} holds DSPy modules inside a nested container; DSPy only looks one list or dict deep for predictors"
                )
            return _NOTHING
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                if _holds_dspy(value, dspy, Parameter):
                    raise ConfigurationError(f"{where} is a dict with non-text keys holding DSPy modules; use text keys")
                return _NOTHING
            items = {k: _convert(v, f"{where}['{k}']", memo, nested=True) for k, v in value.items()}
            kept = {k: v for k, v in items.items() if v is not _NOTHING}
            return kept if kept else _NOTHING
        converted = [_convert(v, f"{where}[{i}]", memo, nested=True) for i, v in enumerate(value)]
        if all(v is _NOTHING for v in converted):
            return _NOTHING
        return [None if v is _NOTHING else v for v in converted]
    else:
        return _NOTHING
    memo[id(value)] = result
    return result


def _holds_dspy(value: Any, dspy: Any, parameter: type) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, (dspy.Module, parameter)):
            return True
        if isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return False


def _predictor(value: Any, where: str, dspy: Any) -> Predict:
    if isinstance(value, dspy.ChainOfThought):
        inner = value.predict
        signature = signature_from_dspy(inner.signature)
        if "reasoning" not in signature.output_fields:
            raise ConfigurationError(f"{where} is a ChainOfThought whose predictor has no 'reasoning' output field")
        return ChainOfThought(signature, demos=_demos(inner.demos), **_config(inner, where))
    return Predict(signature_from_dspy(value.signature), demos=_demos(value.demos), **_config(value, where))


def _reserved() -> set[str]:
    """Attribute names a converted module cannot use: they belong to ``DSPyProgram`` itself."""
    return set(dir(DSPyProgram)) | {"compile_info"}


def _module(value: Any, where: str, memo: dict[int, Any], *, top: bool) -> Any:
    """A ``DSPyProgram`` for a user module; ``_NOTHING`` for a helper module without predictors (left as it is)."""
    parts: dict[str, Any] = {}
    placeholder = object.__new__(DSPyProgram)  # stands in for itself if the module refers back to itself
    memo[id(value)] = placeholder
    for key, child in vars(value).items():
        if key in ("callbacks", "history", "_compiled"):
            continue
        converted = _convert(child, f"{type(value).__name__}.{key}" if where == "self" else f"{where}.{key}", memo)
        if converted is _NOTHING or converted is placeholder:
            continue
        if key.startswith("_"):
            raise ConfigurationError(
                f"{type(value).__name__}.{key} holds predictors, but oobleck skips attributes whose names start with '_'; rename it"
            )
        if key in _reserved():
            raise ConfigurationError(f"{type(value).__name__}.{key}: the attribute name {key!r} is taken by ob.Module; rename it")
        parts[key] = converted
    if not parts:
        if top:
            raise ConfigurationError(f"{type(value).__name__} has no dspy.Predict or dspy.ChainOfThought to convert")
        return _NOTHING
    placeholder.__init__(value, parts)
    return placeholder


class _Nothing:
    def __repr__(self) -> str:
        return "<nothing>"


_NOTHING = _Nothing()


class DSPyProgram(Module):
    """A user ``dspy.Module`` as an oobleck Module, made by ``ob.from_dspy``.

    Its oobleck predictors sit at the DSPy module's attribute paths, so optimizers, artifacts
    and ``to_dspy`` address them by the same names. ``forward`` runs the DSPy module's own
    ``forward`` (DSPy's ``__call__``, callbacks included) with these predictors in place of
    DSPy's, on a shallow per-call copy: the user's DSPy object is never changed, and copies
    of this program (optimizers make many) each run their own predictors.
    """

    def __init__(self, dspy_module: Any, parts: Mapping[str, Any]):
        self._dspy = dspy_module
        self._parts = tuple(parts)
        for key, value in parts.items():
            setattr(self, key, value)

    @property
    def dspy_module(self) -> Any:
        """The DSPy module this program was converted from (never modified)."""
        return self._dspy

    def bound(self) -> Any:
        """A shallow copy of the DSPy module with this program's predictors in place of DSPy's."""
        original = self._dspy
        clone = object.__new__(type(original))
        clone.__dict__.update(original.__dict__)
        for key in self._parts:
            clone.__dict__[key] = _bind(original.__dict__.get(key), getattr(self, key))
        return clone

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.bound()(*args, **kwargs)

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        if callable(getattr(type(self._dspy), "aforward", None)):
            return await self.bound().acall(*args, **kwargs)
        return await super().aforward(*args, **kwargs)  # no async forward in the DSPy module: run forward in a thread

    def __deepcopy__(self, memo: dict[int, Any]) -> DSPyProgram:
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in vars(self).items():
            setattr(clone, key, value if key == "_dspy" else copy.deepcopy(value, memo))
        return clone

    def __repr__(self) -> str:
        return f"DSPyProgram({type(self._dspy).__name__}, predictors={[n for n, _ in self.named_predictors()]})"


def _bind(original: Any, mine: Any) -> Any:
    if isinstance(mine, DSPyProgram):
        return mine.bound()
    if isinstance(mine, Module):
        return mine
    if isinstance(mine, list) and isinstance(original, (list, tuple)):
        items = [o if m is None else _bind(o, m) for o, m in zip(original, mine)]
        return items if isinstance(original, list) else tuple(items)
    if isinstance(mine, dict) and isinstance(original, dict):
        return {k: (_bind(v, mine[k]) if k in mine else v) for k, v in original.items()}
    return original


# -- names -------------------------------------------------------------------------------------


def _dspy_leaf(path: str, chain_of_thought: bool) -> str:
    if path == "self":
        return "predict" if chain_of_thought else "self"
    return f"{path}.predict" if chain_of_thought else path


def _guess_dspy_name(name: str, chain_of_thought: bool) -> str:
    """DSPy's name for an oobleck predictor name when only the name is known (an artifact).

    Number parts become list indexes; any other part is taken as an attribute (a dict key
    would be ``['key']`` in DSPy: pass the DSPy program to ``to_dspy`` to map those exactly).
    """
    if name == "self":
        return _dspy_leaf(name, chain_of_thought)
    head, *rest = name.split(".")
    out = head
    for part in rest:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return _dspy_leaf(out, chain_of_thought)


def dspy_names(program: Module) -> dict[str, str]:
    """``{oobleck predictor name: DSPy predictor name}`` for ``program``, in oobleck's order.

    Walks the program as ``Module.named_predictors`` does, spelling each step as DSPy's
    ``named_predictors`` would: ``hops.0`` -> ``hops[0]``, ``tools.k`` -> ``tools['k']``, and
    ``.predict`` after a ChainOfThought.
    """
    if isinstance(program, Predict):
        return {"self": _dspy_leaf("self", isinstance(program, ChainOfThought))}
    found: dict[str, str] = {}
    seen: set[int] = {id(program)}

    def visit(value: Any, path: str, spelled: str) -> None:
        if id(value) in seen:
            return
        if isinstance(value, Predict):
            seen.add(id(value))
            found[path] = _dspy_leaf(spelled, isinstance(value, ChainOfThought))
        elif isinstance(value, Module):
            seen.add(id(value))
            for key, child in vars(value).items():
                if not key.startswith("_"):
                    visit(child, f"{path}.{key}", f"{spelled}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, child in enumerate(value):
                visit(child, f"{path}.{i}", f"{spelled}[{i}]")
        elif isinstance(value, dict):
            for key, child in value.items():
                if isinstance(key, str):
                    visit(child, f"{path}.{key}", f"{spelled}['{key}']")

    for key, value in vars(program).items():
        if not key.startswith("_"):
            visit(value, key, key)
    return {
        name: found.get(name) or _guess_dspy_name(name, isinstance(p, ChainOfThought)) for name, p in program.named_predictors()
    }


# -- oobleck -> DSPy ---------------------------------------------------------------------------


def _dependency_versions() -> dict[str, str]:
    """What DSPy records under ``metadata.dependency_versions`` (only keys DSPy knows, so load never fails)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for key, distributions in (("dspy", ("dspy", "dspy-ai")), ("cloudpickle", ("cloudpickle",))):
        for distribution in distributions:
            try:
                text = version(distribution)
            except PackageNotFoundError:
                continue
            versions[key] = ".".join(text.split(".")[:2]) if key == "cloudpickle" else text
            break
    return versions


def _signature_state(signature: type[Signature]) -> dict[str, Any]:
    return {
        "instructions": signature.instructions,
        "fields": [{"prefix": f.prefix or dspy_prefix(n), "description": f.desc or f"${{{n}}}"} for n, f in signature.fields.items()],
    }


def _predictor_state(signature: type[Signature], demos: list[dict[str, Any]]) -> dict[str, Any]:
    return {"traces": [], "train": [], "demos": [to_jsonable(dict(d)) for d in demos], "signature": _signature_state(signature), "lm": None}


_PER_CALL = ("predictor {name!r} picks its demos per call (e.g. KNNFewShot), and DSPy's saved state holds fixed demos only; "
             "compile with an optimizer that sets fixed demos to export to DSPy")


def _entries_of(program: Module | str | os.PathLike[str]) -> tuple[dict[str, tuple[type[Signature], list[dict[str, Any]], bool]], dict[str, str]]:
    """``({oobleck name: (signature, demos, is ChainOfThought)}, {oobleck name: DSPy name})``."""
    if isinstance(program, EnsembleProgram):
        raise ConfigurationError("DSPy has no ensemble state to load an EnsembleProgram into: export one member instead")
    if isinstance(program, Module):
        predictors = program.named_predictors()
        for name, predictor in predictors:
            if predictor.demo_selector is not None:
                raise ConfigurationError(_PER_CALL.format(name=name))
        entries = {n: (p.signature, list(p.demos), isinstance(p, ChainOfThought)) for n, p in predictors}
        return entries, dspy_names(program)
    if isinstance(program, (str, os.PathLike)):
        from oobleck.artifact import read_manifest

        manifest = read_manifest(program)
        if "ensemble" in manifest["program"]:
            raise ArtifactError(f"{program} holds an ensemble; DSPy has no ensemble state to load it into: export one member instead")
        entries = {}
        for name, state in manifest["program"]["predictors"].items():
            try:
                signature = Signature.from_dict(state["signature"])
            except OobleckError as exc:
                raise ArtifactError(f"{program}: predictor {name!r} has an invalid signature: {exc}") from None
            if state.get("demo_selector") is not None:
                raise ConfigurationError(_PER_CALL.format(name=name))
            entries[name] = (signature, list(state.get("demos", [])), state["kind"] == "ChainOfThought")
        return entries, {n: _guess_dspy_name(n, cot) for n, (_, _, cot) in entries.items()}
    raise ConfigurationError(f"to_dspy takes an ob.Module or an artifact path, not {type(program).__name__}")


def to_dspy(program: Module | str | os.PathLike[str], path: str | os.PathLike[str], *, dspy_program: Any = None) -> Path:
    """Write ``program``'s instructions and demos as the JSON ``dspy_program.save(path)`` writes.

    ``program`` is an oobleck Module (e.g. compiled from a ``from_dspy`` conversion) or an
    artifact folder. Load the file into the DSPy program with ``dspy_program.load(path)``.
    Given ``dspy_program`` (or when ``program`` came from ``from_dspy``), predictor names and
    fields are checked against it first and its exact names are used; otherwise names are
    spelled from oobleck's. LMs are not written (``"lm": null``): DSPy uses the LM it is
    configured with. Returns the path written.
    """
    target = Path(path)
    if target.suffix != ".json":
        raise ConfigurationError(f"DSPy loads saved state from a .json file; {target} does not end in .json")
    entries, names = _entries_of(program)
    reference = dspy_program
    if reference is None and isinstance(program, DSPyProgram):
        reference = program.dspy_module
    if reference is not None:
        names = _check_against(entries, reference)
    state: dict[str, Any] = {names[n]: _predictor_state(signature, demos) for n, (signature, demos, _) in entries.items()}
    if list(state) == ["self"]:  # a lone dspy.Predict saves (and loads) its own state at the top level
        state = dict(state["self"])
    state["metadata"] = {"dependency_versions": _dependency_versions()}
    text = json.dumps(state, indent=2, ensure_ascii=False) + "\n"
    _write_atomic(target, text)
    return target


def _check_against(entries: dict[str, tuple[type[Signature], list[dict[str, Any]], bool]], dspy_program: Any) -> dict[str, str]:
    """Exact DSPy names for ``entries`` from the DSPy program they will load into; refuse a misfit."""
    reference = from_dspy(dspy_program)
    if not isinstance(reference, Module):
        raise ConfigurationError(f"dspy_program must be a DSPy module, not {type(dspy_program).__name__}")
    names = dspy_names(reference)
    own = dict(reference.named_predictors())
    problems = misfit((sorted(set(entries) - set(own)), "predictors {} are not in the DSPy program"),
                      (sorted(set(own) - set(entries)), "the DSPy program's predictors {} are not in the oobleck program"))  # fmt: skip
    if problems:
        raise ArtifactError(f"the program does not fit {type(dspy_program).__name__}: {problems} "
                            f"(oobleck names; the DSPy program has {sorted(names.values())})")  # fmt: skip
    for name, (signature, _, _) in entries.items():
        if list(signature.fields) != list(own[name].signature.fields):
            raise ArtifactError(
                f"predictor {name!r} has fields {list(signature.fields)} but the DSPy program's {names[name]!r} has "
                f"{list(own[name].signature.fields)}"
            )
    return names


def _write_atomic(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


# -- DSPy JSON -> oobleck ----------------------------------------------------------------------

_PICKLE_SUFFIXES = {".pkl", ".pickle", ".cloudpickle"}


def _read_dspy_json(file: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any], bytes]:
    """The predictor states and metadata of a DSPy-saved JSON file, validated; pickles refused."""
    if file.is_dir():
        if (file / "program.pkl").exists():
            raise ArtifactError(f"{file} is a DSPy program saved with save_program=True (a cloudpickle); oobleck never loads pickles: "
                                "save the state as JSON instead: program.save('program.json')")  # fmt: skip
        raise ArtifactError(f"{file} is a folder; pass the .json file DSPy wrote with program.save('program.json')")
    if file.suffix.lower() in _PICKLE_SUFFIXES:
        raise ArtifactError(f"{file} is a pickle; oobleck never loads pickles (they can run code): save the DSPy state as JSON instead: "
                            "program.save('program.json')")  # fmt: skip
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"no file {file}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {file}: {exc}") from None
    if raw[:1] == b"\x80":
        raise ArtifactError(f"{file} holds a pickle, not JSON; oobleck never loads pickles: save the DSPy state as JSON instead")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{file} is not a JSON file DSPy saved: {exc}") from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{file}: the top level must be an object of predictor states")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{file}: 'metadata' must be an object")
    states = {k: v for k, v in document.items() if k != "metadata"}
    signature = document.get("signature")
    if isinstance(signature, dict) and "fields" in signature:  # a lone dspy.Predict saves its own state at the top level
        states = {"self": states}
    if not states:
        raise ArtifactError(f"{file} holds no predictor states")
    for name, state in states.items():
        where = f"{file}: predictor {name!r}"
        if not isinstance(state, dict):
            raise ArtifactError(f"{where} must be an object")
        if "extended_signature" in state:
            raise ArtifactError(f"{where} was saved by DSPy 2.5 or older (extended_signature); re-save it with DSPy 2.6 or newer")
        signature = state.get("signature")
        if not isinstance(signature, dict) or not isinstance(signature.get("fields"), list):
            raise ArtifactError(f"{where} has no signature with a 'fields' list")
        if not isinstance(signature.get("instructions", ""), str):
            raise ArtifactError(f"{where}: instructions must be text")
        for entry in signature["fields"]:
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k, ""), str) for k in ("prefix", "description")):
                raise ArtifactError(f"{where}: each field must be an object with text 'prefix' and 'description'")
        demos = state.get("demos", [])
        if not isinstance(demos, list) or not all(isinstance(d, dict) for d in demos):
            raise ArtifactError(f"{where}: demos must be a list of objects")
    return states, metadata, raw


def _imported_signature(signature: type[Signature], saved: dict[str, Any], where: str) -> type[Signature]:
    """``signature`` with the saved instructions and per-field descriptions and prefixes."""
    fields = list(signature.fields.values())
    saved_fields = saved["fields"]
    if len(saved_fields) != len(fields):
        raise ArtifactError(f"{where} was saved with {len(saved_fields)} fields but the program's has {len(fields)}: {[f.name for f in fields]}")
    spec: dict[str, Any] = {}
    for field, entry in zip(fields, saved_fields):
        description, prefix = entry.get("description", ""), entry.get("prefix", "")
        placeholder = _PLACEHOLDER.match(description)
        if placeholder and placeholder.group(1) != field.name:
            raise ArtifactError(
                f"{where}: saved field {placeholder.group(1)!r} stands where the program has {field.name!r} "
                f"(program fields {[f.name for f in fields]})"
            )
        desc = "" if placeholder else description
        label = None if not prefix or prefix == dspy_prefix(field.name) else prefix
        maker = InputField if field.is_input else OutputField
        spec[field.name] = (field.annotation, maker(desc, prefix=label))
    instructions: str | None = saved.get("instructions") or None
    if instructions == default_instructions(list(signature.input_fields), list(signature.output_fields)):
        instructions = None
    return make_signature(spec, instructions, name=signature.__name__)


def import_dspy_json(path: str | os.PathLike[str], program: Any, *, out: str | os.PathLike[str] | None = None) -> Module:
    """An oobleck program with the instructions and demos of a DSPy-saved JSON file.

    ``program`` gives the structure the file's state belongs to (DSPy's JSON holds no field
    names, types or input/output split): the DSPy module that saved it, or an oobleck Module
    of the same shape. It is not changed; a converted copy is returned, and saved as an
    artifact at ``out`` when given. Pickles (``.pkl``, ``save_program=True`` folders) are
    refused; a file whose predictor names or fields do not fit the program is refused with
    both lists.
    """
    file = Path(path)
    states, metadata, raw = _read_dspy_json(file)
    if isinstance(program, Module):
        result = program.deepcopy()
    elif _is_dspy_object(program) and not isinstance(program, type):
        result = from_dspy(program)
    else:
        raise ConfigurationError(
            f"import_dspy_json needs the program the file belongs to (a DSPy module or an ob.Module), not {type(program).__name__}: "
            "DSPy's JSON holds no field names or types"
        )
    names = dspy_names(result)
    by_dspy = {spelled: name for name, spelled in names.items()}
    problems = misfit((sorted(set(states) - set(by_dspy)), "the file's predictors {} are not in the program"),
                      (sorted(set(by_dspy) - set(states)), "the program's predictors {} are not in the file"))  # fmt: skip
    if problems:
        raise ArtifactError(f"{file} does not fit {type(program).__name__}: {problems} "
                            f"(file has {sorted(states)}, program has {sorted(by_dspy)})")  # fmt: skip
    own = dict(result.named_predictors())
    planned = []
    for spelled, state in states.items():
        predictor = own[by_dspy[spelled]]
        signature = _imported_signature(predictor.signature, state["signature"], f"{file}: predictor {spelled!r}")
        planned.append((predictor, signature, [dict(d) for d in state.get("demos", [])]))
        if state.get("lm"):
            logger.warning("%s: predictor %r names a DSPy LM; it is not imported (oobleck uses the LM you configure)", file, spelled)
    for predictor, signature, demos in planned:
        predictor.signature = signature
        predictor.demos = demos
    result.compile_info = {
        "imported_from": "dspy",
        "source": str(file),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "dependency_versions": to_jsonable(metadata.get("dependency_versions") or {}),
    }
    if out is not None:
        result.save(out)
    return result
