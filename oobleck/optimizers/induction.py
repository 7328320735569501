"""The instruction-induction prompt: demos in, a task instruction out.

It lives in one place because two things must agree on it exactly: instruction proposers,
which ask an LM to name the task behind some demos, and the demo model, which was trained to
answer this very prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from oobleck.adapters.base import format_value
from oobleck.signatures.signature import Signature, make_signature

__all__ = ["INDUCTION_INSTRUCTION", "examples_line", "induction_signature"]

INDUCTION_INSTRUCTION = "Write the instruction that turns each input into its output."


def induction_signature() -> type[Signature]:
    return make_signature("examples -> instruction", INDUCTION_INSTRUCTION, name="InduceInstruction")


def _side(values: Sequence[Any]) -> str:
    return " | ".join(format_value(v).replace("\n", " ") for v in values)


def examples_line(signature: type[Signature], demos: Sequence[Mapping[str, Any]]) -> str:
    """Demos on one line: ``in -> out; in -> out`` (several fields joined by `` | ``)."""
    parts = []
    for demo in demos:
        ins = [demo[n] for n in signature.input_fields if n in demo]
        outs = [demo[n] for n in signature.output_fields if n in demo]
        if ins and outs:
            parts.append(f"{_side(ins)} -> {_side(outs)}")
    return "; ".join(parts)
