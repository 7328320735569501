"""Interop with other frameworks; DSPy for now (``pip install 'oobleck[dspy]'``).

Nothing here imports DSPy until a function that needs live DSPy objects is called.
"""

from oobleck.interop.dspy import DSPyProgram, dspy_names, from_dspy, import_dspy_json, to_dspy

__all__ = ["DSPyProgram", "dspy_names", "from_dspy", "import_dspy_json", "to_dspy"]
