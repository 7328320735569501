"""The programs a server exposes: each under a URL-safe name, with its input and output fields.

A program's interface comes from its signature when it has one (a ``Predict``, a
``ChainOfThought``, an ensemble of them); a user's own Module has inputs from its ``forward``
parameters and outputs that are whatever its ``forward`` returns. The in-process Hugging Face
models the programs use are found here too, through each predictor's ``resolve_lm()``, so the
OpenAI-compatible endpoint serves exactly the model (soft prompt included) a predictor calls.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oobleck.errors import ConfigurationError, OobleckError
from oobleck.modules.ensemble import EnsembleProgram
from oobleck.modules.module import Module
from oobleck.modules.predict import Predict
from oobleck.modules.retrieve import named_retrievers

__all__ = ["FieldInfo", "Registry", "ServedProgram", "name_for", "split_named"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class FieldInfo:
    """One input or output of a served program: name, Python type (``Any`` when unknown), description."""

    name: str
    annotation: Any = Any
    desc: str = ""


@dataclass
class ServedProgram:
    """A program under ``name``; ``inputs``/``outputs`` are derived from it unless given.

    ``outputs`` is ``None`` when the program declares no output fields (a user Module): its
    response is then whatever its ``forward`` returns, as a JSON object.
    """

    name: str
    program: Module
    source: str | None = None
    inputs: list[FieldInfo] = field(default_factory=list)
    outputs: list[FieldInfo] | None = None
    instructions: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.program, Module):
            raise ConfigurationError(f"program {self.name!r} must be an ob.Module, not {type(self.program).__name__}")
        if not self.inputs:
            self.inputs, self.outputs, self.instructions = interface_of(self.program)
        for path, retrieve in named_retrievers(self.program):  # a program that cannot retrieve fails now, not on each request
            try:
                retrieve.resolve_retriever()
            except OobleckError as exc:
                raise ConfigurationError(f"program {self.name!r}: its Retrieve {path!r} cannot run: {exc}") from None

    @property
    def kind(self) -> str:
        return getattr(self.program, "kind", type(self.program).__name__)

    def lms(self) -> dict[str, Any]:
        """Each predictor's effective LM, by predictor name; predictors with no LM are left out."""
        found: dict[str, Any] = {}
        for pname, predictor in self.program.named_predictors():
            try:
                found[pname] = predictor.resolve_lm()
            except OobleckError:
                continue
        return found

    def describe(self) -> dict[str, Any]:
        """What ``GET /programs`` shows: fields with types as text, LMs, predictors."""
        from oobleck.signatures.types import type_to_str

        def fields(items: Iterable[FieldInfo]) -> list[dict[str, str]]:
            return [{"name": f.name, "type": type_to_str(f.annotation), "desc": f.desc} for f in items]

        return {
            "name": self.name,
            "kind": self.kind,
            "source": Path(self.source).name if self.source else None,  # the folder, not the server's file layout
            "inputs": fields(self.inputs),
            "outputs": None if self.outputs is None else fields(self.outputs),
            "instructions": self.instructions,
            "predictors": [n for n, _ in self.program.named_predictors()],
            "lms": {n: _public_model_id(lm.describe().get("model")) for n, lm in self.lms().items()},
        }


def _public_model_id(model: Any) -> Any:
    """An LM's id without the server's file layout: ``hf/<folder name>`` for a local model path."""
    if isinstance(model, str) and "/" in model:
        provider, _, rest = model.partition("/")
        if rest.startswith(("/", "~", ".")):
            return f"{provider}/{rest.rstrip('/').rsplit('/', 1)[-1]}"
    return model


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"program name {name!r} must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def name_for(directory: str | Path) -> str:
    """A program's default name: its folder's name without ``.oobleck``."""
    base = Path(directory).absolute().name
    base = base.removesuffix(".oobleck")
    return base


def split_named(spec: str) -> tuple[str | None, str]:
    """``name=value`` -> (name, value); a spec without a leading ``name=`` -> (None, spec)."""
    head, sep, rest = spec.partition("=")
    if sep and head and _NAME.match(head) and rest:
        return head, rest
    return None, spec


def interface_of(program: Module) -> tuple[list[FieldInfo], list[FieldInfo] | None, str]:
    """Inputs, outputs (None when undeclared) and instructions of a program."""
    predict = _signature_owner(program)
    if predict is not None:
        signature = predict.signature
        inputs = [FieldInfo(n, f.annotation, f.desc) for n, f in signature.input_fields.items()]
        outputs = [FieldInfo(n, f.annotation, f.desc) for n, f in signature.output_fields.items()]
        return inputs, outputs, signature.instructions
    return _forward_inputs(program), None, (inspect.getdoc(type(program)) or "").strip()


def _signature_owner(program: Module) -> Predict | None:
    """The predictor whose signature is the program's interface, if there is one."""
    if isinstance(program, Predict):
        return program
    if isinstance(program, EnsembleProgram) and program.members:
        members = [m for m in program.members if isinstance(m, Predict)]
        if len(members) == len(program.members):
            shapes = {tuple((n, str(f.annotation)) for n, f in m.signature.fields.items()) for m in members}
            if len(shapes) == 1:
                return members[0]
    return None


def _forward_inputs(program: Module) -> list[FieldInfo]:
    """Keyword inputs of a user Module's ``forward``, typed by its annotations where given."""
    forward = type(program).forward
    try:
        parameters = list(inspect.signature(forward).parameters.values())[1:]  # drop self
    except (TypeError, ValueError):
        parameters = []
    try:
        hints = typing.get_type_hints(forward)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is just untyped
        hints = {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    fields = [FieldInfo(p.name, _servable(hints.get(p.name, Any))) for p in parameters if p.kind in kinds]
    if not fields:
        raise ConfigurationError(
            f"{type(program).__name__}.forward takes no named inputs; a served program needs keyword inputs "
            "(e.g. def forward(self, question: str))"
        )
    return fields


def _servable(annotation: Any) -> Any:
    """An annotation pydantic can validate; anything else (a custom class) is accepted as any JSON."""
    from oobleck.signatures.types import is_pydantic_model

    if annotation in (str, int, float, bool, list, dict) or annotation is Any or is_pydantic_model(annotation):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, dict, typing.Union, typing.Literal) or type(annotation).__name__ == "UnionType":
        return annotation
    return Any


class Registry:
    """Served programs by name, refusing duplicate names."""

    def __init__(self, programs: Iterable[ServedProgram] | Mapping[str, Module]):
        self.programs: dict[str, ServedProgram] = {}
        items = [ServedProgram(n, p) for n, p in programs.items()] if isinstance(programs, Mapping) else list(programs)
        for served in items:
            if not isinstance(served, ServedProgram):
                raise ConfigurationError(f"serve takes ServedProgram objects or a {{name: Module}} mapping, not {type(served).__name__}")
            if served.name in self.programs:
                raise ConfigurationError(f"two programs are named {served.name!r}; name one explicitly (NAME=DIR)")
            self.programs[served.name] = served
        if not self.programs:
            raise ConfigurationError("nothing to serve: give at least one program")

    def __iter__(self) -> typing.Iterator[ServedProgram]:
        return iter(self.programs.values())

    def __len__(self) -> int:
        return len(self.programs)

    def hf_models(self) -> dict[str, Any]:
        """Every in-process Hugging Face LM the programs use, by OpenAI model id.

        The id is the program's name, or ``program/predictor`` for a program of several
        predictors; the LM is the predictor's effective one (``resolve_lm()``), so a predictor
        with a soft prompt is served with it.
        """
        from oobleck.lm.hf_backend import HuggingFaceLM

        models: dict[str, Any] = {}
        for served in self:
            lms = served.lms()
            single = len(served.program.named_predictors()) == 1
            for pname, lm in lms.items():
                if isinstance(lm, HuggingFaceLM):
                    models[served.name if single else f"{served.name}/{pname}"] = lm
        return models

    def lms(self) -> list[Any]:
        """Each distinct LM the programs use, once."""
        seen: dict[int, Any] = {}
        for served in self:
            for lm in served.lms().values():
                seen.setdefault(id(lm), lm)
        return list(seen.values())
