"""A per-hop view of one traced run, for ``oobleck inspect --trace``.

Calls are shown in order, named as optimizers and artifacts name them; a hop is a run of
calls ending in a retrieval, so a Baleen-style program reads as "hop 1: query -> passages,
hop 2: query -> passages, then the answer". Long values are shortened for the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["hops_of", "render_trace"]

_WIDTH = 160


def _short(value: Any, width: int = _WIDTH) -> str:
    """One line of at most ``width`` characters, with rich markup escaped (user text may hold "[...]")."""
    from rich.markup import escape

    text = " ".join(str(value).split())
    return escape(text if len(text) <= width else text[: width - 3] + "...")


def _names(program: Any) -> dict[int, str]:
    from oobleck.modules.retrieve import named_retrievers

    names = {id(p): n for n, p in program.named_predictors()}
    names.update({id(r): n for n, r in named_retrievers(program)})
    return names


def hops_of(entries: Sequence[Any]) -> list[list[Any]]:
    """Trace entries grouped into hops: each group ends with a retrieval (the last may have none)."""
    from oobleck.modules.retrieve import Retrieve

    hops: list[list[Any]] = [[]]
    for entry in entries:
        hops[-1].append(entry)
        if isinstance(entry.predictor, Retrieve):
            hops.append([])
    return [h for h in hops if h]


def render_trace(console: Any, program: Any, entries: Sequence[Any], outputs: Any) -> None:
    """Print each hop's calls (inputs and outputs; passages with id, title and score), then the final outputs."""
    from oobleck.modules.retrieve import Retrieve

    names = _names(program)
    hops = hops_of(entries)
    for number, hop in enumerate(hops, 1):
        retrieves = any(isinstance(e.predictor, Retrieve) for e in hop)
        console.rule(f"hop {number}" if retrieves else ("final step" if number == len(hops) else f"step {number}"))
        for entry in hop:
            name = names.get(id(entry.predictor), type(entry.predictor).__name__)
            if isinstance(entry.predictor, Retrieve):
                console.print(f"[bold]{_short(name)}[/] (Retrieve, k={entry.inputs.get('k')})  query: {_short(entry.inputs.get('query'))}", highlight=False)
                for rank, passage in enumerate(entry.outputs.get("passages", []), 1):
                    score = getattr(passage, "score", None)
                    shown = "-" if score is None else f"{score:.3f}"
                    title = _short(getattr(passage, "title", "") or "-")
                    pid = _short(f"[{getattr(passage, 'id', '')}]")
                    console.print(f"  {rank}. {pid} {title} (score {shown}): {_short(passage, 110)}", highlight=False)
                continue
            console.print(f"[bold]{_short(name)}[/] ({getattr(entry.predictor, 'kind', type(entry.predictor).__name__)})", highlight=False)
            for key, value in entry.inputs.items():
                shown = f"{len(value)} items" if isinstance(value, list) and len(str(value)) > _WIDTH else _short(value)
                console.print(f"  in  {_short(key)}: {shown}", highlight=False)
            for key, value in entry.outputs.items():
                console.print(f"  out {_short(key)}: {_short(value)}", highlight=False)
    console.rule("outputs")
    items = outputs.items() if hasattr(outputs, "items") else [("output", outputs)]
    for key, value in items:
        if key == "passages" and isinstance(value, list):
            value = ", ".join(f"{getattr(p, 'title', '') or getattr(p, 'id', '')}" for p in value)
        console.print(f"{_short(key)}: {_short(value)}", highlight=False)
