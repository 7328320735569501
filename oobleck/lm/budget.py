"""Spending limits for a run: LM calls, tokens and cost, checked before every LM call.

A compile opens ``spending(budget)``; every LM call made inside it (task, teacher, proposer,
reflection LMs, in any thread or task that inherited the context) is charged to it. Calls are
*logical*: a cache hit costs what the original call cost. That makes a budget deterministic, so
a resumed or repeated compile stops at exactly the same point as the first one, and
``billed_calls`` says how many calls really reached a server.

The call cap is honoured to the call: a call that would exceed it raises ``BudgetExceeded``
before anything is sent. Token and cost caps are checked before each call too, against what is
spent so far, so calls already in flight when the cap is reached may pass it by their own size.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from oobleck.errors import BudgetExceeded, ConfigurationError

__all__ = ["PRICES", "Budget", "Spend", "price_of", "set_price", "spending"]

logger = logging.getLogger("oobleck.lm.budget")

# USD per million (input, output) tokens, by model id with or without its provider prefix.
# Extend with ``ob.set_price("openai/my-model", 0.5, 1.5)``; local models cost nothing.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku-latest": (0.80, 4.00),
    "claude-sonnet-4-5": (3.00, 15.00),
}
_LOCAL_PROVIDERS = ("hf/", "huggingface/")


def set_price(model: str, input_per_million: float, output_per_million: float) -> None:
    """Price a model (USD per million prompt / completion tokens) for ``max_cost`` budgets."""
    if input_per_million < 0 or output_per_million < 0:
        raise ConfigurationError(f"prices must be >= 0, got {input_per_million}, {output_per_million} for {model!r}")
    PRICES[model] = (float(input_per_million), float(output_per_million))


def price_of(model: str) -> tuple[float, float] | None:
    """The price of ``model`` (``"openai/gpt-4o-mini"`` or ``"gpt-4o-mini"``), ``(0, 0)`` for local models."""
    if model in PRICES:
        return PRICES[model]
    if model.startswith(_LOCAL_PROVIDERS):
        return (0.0, 0.0)
    bare = model.split("/", 1)[1] if "/" in model else model
    return PRICES.get(bare)


@dataclass(frozen=True)
class Budget:
    """Caps on a run's LM spend; ``None`` means no cap on that measure."""

    max_lm_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_lm_calls", "max_tokens", "max_cost"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ConfigurationError(f"budget {name} must be a number >= 0 or None, not {value!r}")

    @property
    def unlimited(self) -> bool:
        return self.max_lm_calls is None and self.max_tokens is None and self.max_cost is None

    def to_dict(self) -> dict[str, Any]:
        return {"max_lm_calls": self.max_lm_calls, "max_tokens": self.max_tokens, "max_cost": self.max_cost}


@dataclass
class Spend:
    """What a run has spent: logical calls, tokens, USD, and calls that missed the cache."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    billed_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": round(self.cost, 6), "billed_calls": self.billed_calls}  # fmt: skip

    def add(self, other: dict[str, Any]) -> None:
        """Add a recorded spend (``to_dict`` output) that is being replayed, e.g. a trial finished before a resume.

        Its calls count toward the budget; none of them is billed again, since nothing is sent.
        """
        with self._lock:
            self.calls += int(other.get("calls", 0))
            self.prompt_tokens += int(other.get("prompt_tokens", 0))
            self.completion_tokens += int(other.get("completion_tokens", 0))
            self.cost += float(other.get("cost", 0.0))


@dataclass
class _Scope:
    budget: Budget
    spend: Spend


_scopes: contextvars.ContextVar[tuple[_Scope, ...]] = contextvars.ContextVar("oobleck_budget", default=())
_unpriced_warned: set[str] = set()


@contextmanager
def spending(budget: Budget | None = None, *, spent: Spend | None = None) -> Iterator[Spend]:
    """Charge every LM call in the block to a ``Spend`` (yielded), refusing calls past ``budget``.

    ``spent`` continues an earlier spend (a resumed compile); scopes nest and each is charged.
    """
    scope = _Scope(budget or Budget(), spent if spent is not None else Spend())
    if scope.budget.max_cost is not None:
        logger.debug("cost budget $%.4f", scope.budget.max_cost)
    token = _scopes.set((*_scopes.get(), scope))
    try:
        yield scope.spend
    finally:
        _scopes.reset(token)


def reserve_call(model: str) -> None:
    """Count one call about to be made; raise ``BudgetExceeded`` (and count nothing) past a cap."""
    scopes = _scopes.get()
    if not scopes:
        return
    reserved: list[_Scope] = []
    try:
        for scope in scopes:
            budget, spend = scope.budget, scope.spend
            with spend._lock:
                limit = _exceeded(budget, spend)
                if limit is None:
                    spend.calls += 1
                    reserved.append(scope)
            if limit is not None:
                raise BudgetExceeded(f"budget reached: {limit} (before a call to {model})", limit=limit.split(" ")[0])
    except BudgetExceeded:
        for scope in reserved:  # an outer scope refused: the inner reservations never happened
            with scope.spend._lock:
                scope.spend.calls -= 1
        raise


def _exceeded(budget: Budget, spend: Spend) -> str | None:
    if budget.max_lm_calls is not None and spend.calls + 1 > budget.max_lm_calls:
        return f"max_lm_calls {budget.max_lm_calls} ({spend.calls} made)"
    if budget.max_tokens is not None and spend.tokens >= budget.max_tokens:
        return f"max_tokens {budget.max_tokens} ({spend.tokens} spent)"
    if budget.max_cost is not None and spend.cost >= budget.max_cost:
        return f"max_cost ${budget.max_cost:g} (${spend.cost:.4f} spent)"
    return None


def release_call() -> None:
    """Undo a reservation whose call never happened (it failed before reaching the LM)."""
    for scope in _scopes.get():
        with scope.spend._lock:
            scope.spend.calls -= 1


def charge_tokens(model: str, prompt_tokens: int, completion_tokens: int, *, billed: bool) -> None:
    """Add a finished call's tokens and cost to every open scope."""
    scopes = _scopes.get()
    if not scopes:
        return
    price = price_of(model)
    if price is None:
        price = (0.0, 0.0)
        if model not in _unpriced_warned and any(s.budget.max_cost is not None for s in scopes):
            _unpriced_warned.add(model)
            logger.warning("no price known for %s: its calls count as $0 toward max_cost; add one with ob.set_price", model)
    cost = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
    for scope in scopes:
        with scope.spend._lock:
            scope.spend.prompt_tokens += prompt_tokens
            scope.spend.completion_tokens += completion_tokens
            scope.spend.cost += cost
            scope.spend.billed_calls += int(billed)
