"""The soft prompt fallback: discrete search first, gradient training only where it is needed and possible.

``WithFallback(discrete, soft, target=...)`` runs the discrete optimizer, then trains soft
prompts when its dev score is below ``target`` or has plateaued (gained less than ``min_gain``
over the program as given), and only for predictors whose LM is an in-process Hugging Face
model. Whatever it decides, ``compile_info["fallback"]`` says what ran and why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from oobleck.errors import BudgetExceeded, OobleckError
from oobleck.evaluate.evaluate import Evaluate
from oobleck.example import Example
from oobleck.modules.module import Module
from oobleck.optimizers.base import Optimizer, check_trainset

__all__ = ["WithFallback"]

logger = logging.getLogger("oobleck.optimizers")


class WithFallback(Optimizer):
    """A discrete optimizer with a soft prompt fallback (see the module docstring)."""

    def __init__(self, discrete: Optimizer, soft: Any, *, target: float | None = None, min_gain: float = 0.01, num_threads: int = 8):
        self.discrete = discrete
        self.soft = soft
        self.target = target
        self.min_gain = min_gain
        self.num_threads = num_threads

    def settings(self) -> dict[str, Any]:
        return {"discrete": type(self.discrete).__name__, "discrete_settings": self.discrete.settings(), "soft": self.soft.settings(),
                "target": self.target, "min_gain": self.min_gain}  # fmt: skip

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        from oobleck.optimizers.soft_prompt import soft_prompt_eligibility

        compiled = self.discrete.compile(program, trainset=trainset, valset=valset)
        dev = check_trainset(valset if valset is not None else trainset, "valset")
        evaluate = Evaluate(devset=dev, metric=self.soft.metric, num_threads=self.num_threads, display_progress=False)
        baseline, best = evaluate(program).score, evaluate(compiled).score
        info: dict[str, Any] = {"discrete_dev": best, "baseline_dev": baseline, "target": self.target, "ran": False}
        below = self.target is not None and best < self.target
        plateau = best - baseline < self.min_gain
        if not below and not plateau:
            info["why"] = f"discrete search reached {best:.3f}" + (f", at or above the target {self.target}" if self.target is not None else "")
        else:
            trigger = f"below the target {self.target}" if below else f"a plateau (gain {best - baseline:+.3f} < {self.min_gain})"
            eligible, reasons = soft_prompt_eligibility(compiled)
            if not eligible:
                info["why"] = f"discrete dev score {best:.3f} is {trigger}, but no predictor can take a soft prompt: " + "; ".join(
                    f"{name}: {reason}" for name, reason in reasons.items()
                )
                logger.warning("soft prompt fallback did not run: %s", info["why"])
            else:
                try:
                    soft = self.soft.compile(compiled, trainset=trainset, valset=valset)
                except BudgetExceeded:
                    raise
                except OobleckError as exc:  # the discrete result stands; say why training could not run
                    info["why"] = f"discrete dev score {best:.3f} is {trigger}, but soft prompt training failed: {exc}"
                    logger.warning("soft prompt fallback failed: %s", exc)
                    compiled.compile_info = {**getattr(compiled, "compile_info", {}), "fallback": info}
                    return compiled
                score = evaluate(soft).score
                info.update(ran=True, soft_dev=score, why=f"discrete dev score {best:.3f} is {trigger}")
                if score > best:
                    soft.compile_info = {**soft.compile_info, "discrete": getattr(compiled, "compile_info", {})}
                    compiled = soft
                else:
                    info["kept"] = "discrete: the soft prompt did not beat it on dev"
                logger.info("soft prompt fallback: %s; dev %.3f -> %.3f", info["why"], best, score)
        compiled.compile_info = {**getattr(compiled, "compile_info", {}), "fallback": info}
        return compiled
