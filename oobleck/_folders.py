"""Atomic replacement of a whole folder (artifacts, retrieval indexes).

A folder is written complete under a temporary name beside its target, then renamed into
place; an existing target is moved aside first and put back if the rename fails, so a crash
leaves either the old folder or the new one, never a mix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["replace_folder"]


def replace_folder(staging: Path, target: Path) -> None:
    """Move the finished ``staging`` folder to ``target``, replacing what is there."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
