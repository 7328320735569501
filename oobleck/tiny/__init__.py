"""oobleck-tiny: the bundled offline demo LM (a 1.8M-parameter character-level decoder).

It exists so the quickstart and the integration tests run a real neural model with no
network and no GPU. It is a demo and test model, not a model for real work.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"

__all__ = ["WEIGHTS_DIR"]
