"""``InstructionProposer``: instruction candidates per predictor, written by a prompt LM.

A proposal sees what a careful prompt engineer would look at: the predictor's fields and
current instruction, a summary of the data (computed, not asked of an LM: it is free and
deterministic), demos that worked (bootstrapped traces), and earlier instructions with their
scores. Each proposal draws a different demo set and a different writing tip, and is sampled at
a temperature with its own rollout id, so the candidates differ while staying cacheable.

Small local models cannot follow that long meta-prompt; for LMs that declare the compact
prompt format (the bundled demo model) the proposer uses the instruction-induction prompt
instead ("these inputs and outputs -> the instruction"), which such a model was trained on.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from oobleck.adapters.base import format_value
from oobleck.errors import BudgetExceeded, ConfigurationError, OobleckError
from oobleck.example import Example
from oobleck.lm.base import BaseLM
from oobleck.modules.module import Module
from oobleck.modules.predict import Predict
from oobleck.optimizers.induction import examples_line, induction_signature
from oobleck.signatures.signature import Signature, make_signature
from oobleck.signatures.types import type_to_str

__all__ = ["InstructionProposer", "summarize_data"]

logger = logging.getLogger("oobleck.optimizers.proposer")

_TIPS = (
    "",
    "Be concise: one or two sentences.",
    "Be specific about the exact form of the output.",
    "State the goal of the task, then the rule that produces the output.",
    "Mention the mistakes a careless reader would make and how to avoid them.",
    "Write it as a precise rule a machine could follow.",
)

_PROPOSE_INSTRUCTIONS = (
    "You improve the instruction of one step of a language-model program. Read the step's fields, its current "
    "instruction, a summary of the data, examples of correct inputs and outputs, and earlier instructions with the "
    "score each reached (higher is better). Write one new instruction that will make the step answer correctly more "
    "often. Reply with the instruction text only."
)


def _propose_signature() -> type[Signature]:
    return make_signature(
        "program_step, data_summary, examples, previous_instructions, tip -> instruction", _PROPOSE_INSTRUCTIONS, name="ProposeInstruction"
    )


def summarize_data(examples: Sequence[Example], limit: int = 400) -> str:
    """A short, deterministic description of a data set: fields, lengths, frequent short values."""
    if not examples:
        return "no examples"
    lines = [f"{len(examples)} examples."]
    keys = list(dict.fromkeys(k for ex in examples for k in ex))
    inputs = set(examples[0].input_keys or [])
    for key in keys:
        values = [format_value(ex[key]) for ex in examples if key in ex]
        if not values:
            continue
        mean_len = sum(len(v) for v in values) / len(values)
        role = "input" if key in inputs else "label"
        common = Counter(values).most_common(4)
        if len(set(values)) <= max(2, len(values) // 5):
            spread = ", ".join(f"{v!r} ({n})" for v, n in common)
            lines.append(f"- {key} ({role}): {len(set(values))} distinct values, most common {spread}")
        else:
            lines.append(f"- {key} ({role}): free text, about {mean_len:.0f} characters")
        if role == "label":
            lines += _copied_from(examples, key, inputs)
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _copied_from(examples: Sequence[Example], label: str, inputs: set[str]) -> list[str]:
    """Say so when a label is usually copied out of an input: an extraction task, a fact worth stating."""
    out = []
    for key in sorted(inputs):
        pairs = [(format_value(ex[label]).strip().lower(), format_value(ex[key]).lower()) for ex in examples if label in ex and key in ex]
        copied = sum(1 for value, text in pairs if value and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text))
        if pairs and copied >= 0.5 * len(pairs):
            out.append(f"  {label} appears verbatim in {key} in {100 * copied / len(pairs):.0f}% of examples")
    return out


def _describe_step(name: str, predictor: Predict) -> str:
    signature = predictor.signature
    parts = [f"step {name!r}: {signature.signature}"]
    for field_name, field in signature.fields.items():
        role = "input" if field_name in signature.input_fields else "output"
        desc = f" - {field.desc}" if getattr(field, "desc", None) else ""
        parts.append(f"  {role} {field_name}: {type_to_str(field.annotation)}{desc}")
    parts.append(f"current instruction: {signature.instructions}")
    return "\n".join(parts)


def _examples_text(signature: type[Signature], demos: Sequence[Mapping[str, Any]], limit: int = 10) -> str:
    rows = []
    for demo in list(demos)[:limit]:
        ins = ", ".join(f"{n}={format_value(demo[n])!r}" for n in signature.input_fields if n in demo)
        outs = ", ".join(f"{n}={format_value(demo[n])!r}" for n in signature.output_fields if n in demo)
        if ins and outs:
            rows.append(f"{ins} -> {outs}")
    return "\n".join(rows) or "none"


def _clean(text: str) -> str:
    text = " ".join(str(text).split())
    return text.strip().strip('"').strip()


class InstructionProposer:
    """Proposes ``num_candidates`` instructions per predictor (the current one always first).

    ``prompt_lm``: the LM that writes proposals (default: each predictor's own LM).
    ``pool``: instructions the user already has, as a list (every predictor) or a dict by
    predictor name; they join the candidates. ``style``: ``"meta"`` (the long meta-prompt),
    ``"induction"`` (inputs and outputs -> instruction) or ``"auto"``.
    """

    def __init__(self, prompt_lm: BaseLM | None = None, *, num_candidates: int = 6, pool: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
                 style: str = "auto", temperature: float = 1.0, seed: int = 0):  # fmt: skip
        if style not in {"auto", "meta", "induction"}:
            raise ConfigurationError(f"InstructionProposer style must be 'auto', 'meta' or 'induction', not {style!r}")
        if num_candidates < 1:
            raise ConfigurationError("InstructionProposer needs num_candidates >= 1")
        self.prompt_lm = prompt_lm
        self.num_candidates = num_candidates
        self.pool = pool
        self.style = style
        self.temperature = temperature
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {"num_candidates": self.num_candidates, "style": self.style, "temperature": self.temperature, "seed": self.seed,
                "prompt_lm": self.prompt_lm.describe()["model"] if self.prompt_lm is not None else None,
                "pool": self.pool if self.pool is None or isinstance(self.pool, Mapping) else list(self.pool)}  # fmt: skip

    def _user_pool(self, name: str) -> list[str]:
        if self.pool is None:
            return []
        if isinstance(self.pool, Mapping):
            return [str(s) for s in self.pool.get(name, [])]
        return [str(s) for s in self.pool]

    def _style_for(self, lm: BaseLM) -> str:
        if self.style != "auto":
            return self.style
        return "induction" if lm.adapter == "compact" else "meta"

    def propose(self, program: Module, trainset: Sequence[Example], *, demo_sets: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]] = (),
                history: Mapping[str, Sequence[tuple[str, float]]] | None = None) -> dict[str, list[str]]:  # fmt: skip
        """Instruction candidates per predictor name, deduplicated, the current instruction first.

        ``demo_sets``: candidate demo sets (by predictor name) to show as examples; the labeled
        trainset fills in when a predictor has none. ``history``: earlier (instruction, score)
        pairs per predictor.
        """
        rng = random.Random(self.seed)
        summary = summarize_data(trainset)
        out: dict[str, list[str]] = {}
        for name, predictor in program.named_predictors():
            lm = self.prompt_lm or predictor.resolve_lm()
            style = self._style_for(lm)
            current = predictor.signature.instructions
            found = [current, *self._user_pool(name)]
            sets = [list(s.get(name, [])) for s in demo_sets if s.get(name)]
            labeled = [dict(ex) for ex in trainset]
            wanted = self.num_candidates + len(found) - 1
            attempts = 0
            while len(dict.fromkeys(found)) < wanted and attempts < 2 * self.num_candidates:
                attempt, attempts = attempts, attempts + 1
                demos = sets[attempt % len(sets)] if sets else rng.sample(labeled, min(4, len(labeled)))
                if len(demos) < 2:
                    demos = demos + rng.sample(labeled, min(4, len(labeled)))
                if style == "meta":  # a capable LM reads more: ground it in up to 10 worked examples
                    extra = [d for d in rng.sample(labeled, min(10, len(labeled))) if d not in demos]
                    demos = (list(demos) + extra)[:10]
                else:
                    demos = demos[:6]
                settings = {"temperature": self.temperature if attempt else 0.0, "rollout_id": f"propose-{name}-{self.seed}-{attempt}"}
                try:
                    if style == "induction":
                        proposer = Predict(induction_signature(), lm=lm, adapter="compact", **settings)
                        text = proposer(examples=examples_line(predictor.signature, demos)).instruction
                    else:
                        earlier = "\n".join(f"{score:.3f}: {instr}" for instr, score in (history or {}).get(name, [])) or "none yet"
                        proposer = Predict(_propose_signature(), lm=lm, **settings)
                        text = proposer(program_step=_describe_step(name, predictor), data_summary=summary,
                                        examples=_examples_text(predictor.signature, demos), previous_instructions=earlier,
                                        tip=_TIPS[attempt % len(_TIPS)] or "none").instruction  # fmt: skip
                except BudgetExceeded:
                    raise
                except OobleckError as exc:  # an unparseable proposal is just one candidate fewer
                    logger.debug("proposal %d for %s failed: %s", attempt, name, exc)
                    continue
                text = _clean(text)
                if text:
                    found.append(text)
            out[name] = list(dict.fromkeys(found))[:wanted]
            logger.info("%s: %d instruction candidates", name, len(out[name]))
        return out
