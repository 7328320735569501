"""Compiled-program artifacts: a folder with ``program.json``; JSON and safetensors only."""

from oobleck.artifact.program_file import FORMAT, SCHEMA_VERSION, load_program, read_manifest, save_program

__all__ = ["FORMAT", "SCHEMA_VERSION", "load_program", "read_manifest", "save_program"]
