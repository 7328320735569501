"""Dry runs: what a compile will spend (LM calls, tokens, cost) before it spends anything.

An optimizer describes its plan as phases of program runs (``plan``): how many times the
program runs in each phase and how many demos its prompts then carry. Tokens per call come
from formatting real prompts with the predictor's adapter on training examples and counting
them with the LM's own tokenizer where it has one (the in-process models), so the estimate
tracks what the compile will really send. What cannot be known before running (how many
bootstrap attempts pass the metric, how many trials are pruned, which full evaluations repeat)
is assumed as each optimizer's ``plan`` documents.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oobleck.adapters.base import format_value
from oobleck.errors import ConfigurationError
from oobleck.example import Example
from oobleck.lm.budget import price_of
from oobleck.modules.module import Module

__all__ = ["Estimate", "Phase", "estimate_compile"]

_REASONING_TOKENS = 40  # a ChainOfThought rationale, when nothing better is known


@dataclass(frozen=True)
class Phase:
    """``runs`` program runs whose prompts carry ``demos`` demos each (``extra_prompt`` more tokens)."""

    name: str
    runs: float
    demos: float = 0.0
    extra_prompt: int = 0


@dataclass
class Estimate:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    phases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "tokens": self.tokens, "cost": self.cost, "phases": self.phases}  # fmt: skip


def _per_call(program: Module, trainset: Sequence[Example], demos: float, seed: int = 0) -> tuple[float, float]:
    """Mean (prompt, completion) tokens of one call of each predictor with ``demos`` demos."""
    rng = random.Random(seed)
    sample = rng.sample(list(trainset), min(8, len(trainset)))
    prompt_total = completion_total = 0.0
    count = 0
    for _, predictor in program.named_predictors():
        lm = predictor.resolve_lm()
        adapter = predictor.resolve_adapter(lm)
        signature = predictor.signature
        for example in sample:
            others = [dict(e) for e in trainset if e is not example]
            shown = rng.sample(others, min(round(demos), len(others)))
            inputs = {n: example.get(n, "...") for n in signature.input_fields}
            messages = adapter.format(signature, shown, inputs)
            prompt_total += lm.count_prompt_tokens(messages)
            outputs = " ".join(format_value(example[n]) for n in signature.output_fields if n in example)
            completion = lm.count_tokens(outputs) + (4 * len(signature.output_fields) if adapter.name != "compact" else 1)
            if "reasoning" in signature.output_fields and "reasoning" not in example:
                completion += _REASONING_TOKENS
            completion_total += completion
            count += 1
    return prompt_total / max(count, 1), completion_total / max(count, 1)


def estimate_compile(optimizer: Any, program: Module, trainset: Sequence[Example], valset: Sequence[Example] | None) -> Estimate:
    """The expected spend of ``optimizer.compile(program, trainset=..., valset=...)``."""
    plan = getattr(optimizer, "plan", None)
    if plan is None:
        raise ConfigurationError(f"{type(optimizer).__name__} cannot estimate its spend (no plan); run it with a budget instead")
    phases: list[Phase] = plan(program, len(trainset), len(valset if valset is not None else trainset))
    predictors = len(program.named_predictors())
    cache: dict[float, tuple[float, float]] = {}
    calls = prompt = completion = 0.0
    rows = []
    for phase in phases:
        key = round(phase.demos, 1)
        if key not in cache:
            cache[key] = _per_call(program, trainset, phase.demos)
        p, c = cache[key]
        n = phase.runs * predictors
        calls += n
        prompt += n * (p + phase.extra_prompt)
        completion += n * c
        rows.append({"phase": phase.name, "calls": math.ceil(n), "prompt_tokens": math.ceil(n * (p + phase.extra_prompt)),
                     "completion_tokens": math.ceil(n * c)})  # fmt: skip
    # Calls spread evenly over the predictors, each priced by its own LM; unknown prices make the cost unknown.
    prices = [price_of(p.resolve_lm().budget_id) for _, p in program.named_predictors()]
    cost = None
    if all(price is not None for price in prices):
        share = 1 / len(prices)
        cost = sum(share * (prompt * price[0] + completion * price[1]) / 1_000_000 for price in prices if price is not None)
    return Estimate(math.ceil(calls), math.ceil(prompt), math.ceil(completion), cost, rows)
