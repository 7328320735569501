"""``StepLoop``: a sequential optimizer loop on a ``CompileSession`` that replays itself on resume.

COPRO and Reflective decide each step from the results of the earlier ones, so unlike a TPE
search they cannot take trials out of order. Each step gets the next index; a step already
finished in the study (a resumed compile) is replayed: its value and the attributes it recorded
are read back and its spend is charged again, with no LM call. Work that is not a scoring
(instruction proposals) is kept once per study with its spend, for the same reason: a resumed
run must see the same proposals and reach the same point of its budget as the first run did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oobleck._json import to_jsonable
from oobleck.errors import BudgetExceeded, ConfigurationError
from oobleck.lm.budget import spending
from oobleck.lm.usage import Usage
from oobleck.optimizers.session import CompileSession

__all__ = ["StepLoop", "logical_spend", "session_usage"]


class StepLoop:
    """Numbered steps of one deterministic optimizer loop, each an optuna trial of ``session``."""

    def __init__(self, session: CompileSession):
        self.session = session
        self.index = 0

    def step(self, label: str, work: Callable[[dict[str, Any]], float], *, key: str = "", full: bool = False) -> tuple[float, dict[str, Any]]:
        """Run the next step, or replay it when the study has it: ``(value, attrs)``.

        ``work(attrs)`` scores a candidate and may fill ``attrs`` (JSON-ready) with what later
        steps need; those are stored on the trial and come back on replay. ``full`` marks a
        score on the whole dev set (the report's ``full_score``).
        """
        index, self.index = self.index, self.index + 1
        done = self.session.replay(index)
        if done is not None:
            if key and done.user_attrs.get("key", key) != key:
                raise ConfigurationError(
                    f"study {self.session.study_name!r}: step {index} scored another candidate than this run would; "
                    "the compile changed since it was stored: use another --study name, or delete the study"
                )
            value = done.value if done.value is not None else done.user_attrs.get("pruned_score", 0.0)
            return float(value), dict(done.user_attrs.get("result", {}))
        attrs: dict[str, Any] = {}

        def run(trial: Any) -> float:
            value = float(work(attrs))
            trial.set_user_attr("result", to_jsonable(attrs))
            if full:
                trial.set_user_attr("full_score", value)
            return value

        trial = self.session.ask(index)
        return self.session.run(trial, label, run, key=key), attrs

    def once(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per study, stored with its spend; later and resumed runs read it back."""
        attr = f"oobleck.step.{name}"
        stored = self.session.study.user_attrs.get(attr)
        if stored is not None:
            self.session.spend.add(stored.get("spend", {}))
            _check_replayed(self.session)
            return stored["value"]
        with spending() as spent:
            value = to_jsonable(compute())
        self.session.study.set_user_attr(attr, {"value": value, "spend": spent.to_dict()})
        return value


def _check_replayed(session: CompileSession) -> None:
    """A replayed spend past the budget stops the run where the first run stopped."""
    budget, spend = session.budget, session.spend
    over = (budget.max_lm_calls is not None and spend.calls > budget.max_lm_calls) \
        or (budget.max_tokens is not None and spend.tokens > budget.max_tokens) \
        or (budget.max_cost is not None and spend.cost > budget.max_cost)  # fmt: skip
    if over:
        raise BudgetExceeded(f"the stored steps already spend more than the budget {budget.to_dict()}", limit="replay")


def session_usage(session: CompileSession) -> Usage:
    """The session's logical spend (cache hits count as calls): the same for a resumed and an uninterrupted run."""
    spend = session.spend
    return Usage(spend.calls, spend.prompt_tokens, spend.completion_tokens, 0)


def logical_spend(spend: dict[str, Any]) -> dict[str, Any]:
    """A recorded spend without ``billed_calls``, which differs between a resumed and an uninterrupted run."""
    return {k: v for k, v in spend.items() if k != "billed_calls"}
