"""The one rule for turning values (pydantic models, enums, tuples) into JSON-ready data."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN and infinities have no JSON spelling
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)
