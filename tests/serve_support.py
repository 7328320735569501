"""Helpers for the serving tests: a stand-in in-process model and a real `oobleck serve` process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from oobleck.lm.base import Completion
from oobleck.lm.hf_backend import HuggingFaceLM

ROOT = Path(__file__).resolve().parent.parent


class EchoHF(HuggingFaceLM):
    """A ``HuggingFaceLM`` (as a soft-prompted model would be) that never loads weights.

    It answers with the last message reversed and records the settings of every call, so tests
    can check how OpenAI parameters reach ``generate``.
    """

    def __new__(cls, **kwargs: Any) -> EchoHF:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return super().__new__(cls, "hf/oobleck-tiny")

    def __init__(self, **kwargs: Any):
        super().__init__("hf/oobleck-tiny", **kwargs)
        self.seen: list[dict[str, Any]] = []

    @property
    def context_length(self) -> int:
        return 200

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return [ord(c) for m in messages for c in m["content"]]

    def load(self) -> tuple[Any, Any]:
        return None, None

    def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[Completion]:
        self.seen.append(dict(settings))
        text = messages[-1]["content"][::-1]
        limit = int(settings.get("max_tokens") or 128)
        stop = settings.get("stop") or []
        for s in [stop] if isinstance(stop, str) else stop:
            if s in text:
                text = text[: text.index(s)]
        text = text[:limit]
        n = int(settings.get("n") or 1)
        return [Completion(text, len(self.prompt_ids(messages)), len(text)) for _ in range(n)]


class ServeProcess:
    """``oobleck serve ARGS --port 0`` in a child process; ``url`` once it answers /healthz."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 90.0):
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.banner: list[str] = []
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> ServeProcess:  # noqa: PYI034 (typing.Self needs Python 3.11)
        command = [sys.executable, "-m", "oobleck.cli", "serve", *self.args, "--port", "0", "--log-level", "warning"]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while not self.url:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"oobleck serve exited before serving: {self.stderr()[-2000:]}")
            self.banner.append(line.rstrip())
            match = re.search(r"at (http://\S+)", line)
            if match:
                self.url = match.group(1)
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"oobleck serve exited: {self.stderr()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError("oobleck serve did not become healthy in time")

    def stderr(self) -> str:
        """What the server logged so far."""
        return Path(self.log.name).read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        self.log.close()
        os.unlink(self.log.name)
