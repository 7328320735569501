"""oobleck's loopback OpenAI test server with a responder that both frameworks can parse.

``python -m oobleck.testing.server`` answers from the *oobleck* system message (it reads the
``Output fields:`` section to learn the output types), so a DSPy prompt gets its last message
echoed back, which DSPy cannot parse. The throughput benchmark runs this wrapper instead: the
same server (asyncio, latency as a timer), with a responder that answers any
``question -> answer`` chat prompt in the ``[[ ## answer ## ]]`` / ``[[ ## completed ## ]]``
layout shared by oobleck's and DSPy's ``ChatAdapter``; the answer echoes the question so a
metric can check that every reply was parsed.

    python benchmarks/_echo_server.py --latency 0.05 [--port 0]   # prints the base URL, serves until SIGTERM
"""

from __future__ import annotations

import argparse
from typing import Any

from oobleck.testing.server import OpenAITestServer

_QUESTION = "[[ ## question ## ]]\n"


def answer_for(text: str) -> str:
    """The question inside a chat prompt's last user message (up to the next blank line)."""
    start = text.rfind(_QUESTION)
    if start < 0:
        return text.strip()
    start += len(_QUESTION)
    end = text.find("\n\n", start)
    return (text[start:] if end < 0 else text[start:end]).strip()


def respond(messages: list[dict[str, Any]]) -> str:
    last = messages[-1].get("content") if messages else ""
    if not isinstance(last, str):  # content parts
        last = "".join(p.get("text", "") for p in last or [] if isinstance(p, dict))
    return f"[[ ## answer ## ]]\n{answer_for(last)}\n\n[[ ## completed ## ]]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    server = OpenAITestServer(responder=respond, latency=args.latency, port=args.port, models=["test"], keep_recent=0)
    server.serve_forever(lambda url: print(url, flush=True))


if __name__ == "__main__":
    main()
