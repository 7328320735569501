"""Signatures: the typed input/output contract of each LM step."""

from oobleck.signatures.field import Field, InputField, OutputField
from oobleck.signatures.signature import Signature, default_instructions, ensure_signature, make_signature
from oobleck.signatures.types import coerce, parse_type, type_to_str

__all__ = [
    "Field",
    "InputField",
    "OutputField",
    "Signature",
    "coerce",
    "default_instructions",
    "ensure_signature",
    "make_signature",
    "parse_type",
    "type_to_str",
]
