"""Pydantic request and response models generated from a served program's fields.

FastAPI validates each request body against its program's request model (so a missing,
extra or ill-typed field is a 422 that names it) and shows both models in the OpenAPI docs.
Fields are declared under internal names with the signature's field name as alias, so a
field called ``json`` or ``model_config`` cannot collide with pydantic's own attributes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from oobleck.serve.registry import FieldInfo, ServedProgram

__all__ = ["ErrorBody", "ErrorDetail", "ProgramModels", "models_for"]


class ErrorDetail(BaseModel):
    type: str = Field(description="invalid_request, lm_error, budget_exceeded or internal_error")
    message: str


class ErrorBody(BaseModel):
    """Every error response: what went wrong, and the request id to find it in the server's log."""

    error: ErrorDetail
    request_id: str
    detail: list[dict[str, Any]] | None = Field(default=None, description="for 422: one entry per invalid field, with its location")


class ProgramModels:
    """The request and response models of one program."""

    def __init__(self, request: type[BaseModel], response: type[BaseModel]):
        self.request = request
        self.response = response


def _class_name(name: str) -> str:
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Program"
    return text if text[0].isalpha() else f"P{text}"


def _fields(fields: list[FieldInfo]) -> dict[str, Any]:
    return {
        f"field_{i}": (f.annotation, Field(..., alias=f.name, title=f.name, description=f.desc or None))
        for i, f in enumerate(fields)
    }


def models_for(served: ServedProgram, taken: set[str] | None = None) -> ProgramModels:
    """Request/response models for ``served``; ``taken`` keeps schema names unique across programs."""
    base = _class_name(served.name)
    if taken is not None:
        stem, i = base, 2
        while base in taken:
            base, i = f"{stem}{i}", i + 1
        taken.add(base)
    request = create_model(
        f"{base}Request",
        __config__=ConfigDict(extra="forbid", title=f"{base}Request"),
        __doc__=f"Inputs of program {served.name!r}.",
        **_fields(served.inputs),
    )
    if served.outputs is None:
        response = create_model(
            f"{base}Response",
            __config__=ConfigDict(extra="allow", title=f"{base}Response"),
            __doc__=f"Outputs of program {served.name!r} (its forward() declares no output fields).",
        )
    else:
        response = create_model(
            f"{base}Response",
            __config__=ConfigDict(extra="forbid", title=f"{base}Response"),
            __doc__=f"Outputs of program {served.name!r}.",
            **_fields(served.outputs),
        )
    return ProgramModels(request, response)


class ProgramList(BaseModel):
    programs: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok"]
    programs: int
