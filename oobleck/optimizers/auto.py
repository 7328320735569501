"""``auto``: a sensible optimizer for the data at hand and the budget, so users need not choose.

The choice follows what each optimizer needs to pay off: with a handful of examples there is
nothing to search over and demos are all there is; with a few dozen, scoring bootstrapped demo
sets is cheap and reliable; with more data (and a budget that allows it) the joint Bayesian
search over instructions and demos finds more, its trial count sized to the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oobleck.lm.budget import Budget
from oobleck.optimizers.base import Optimizer

__all__ = ["auto"]


def auto(metric: Callable[..., Any] | str, *, trainset_size: int, devset_size: int | None = None, budget: Budget | None = None,
         max_demos: int = 4, num_threads: int = 8, seed: int = 0, fallback: str | None = None, target: float | None = None,
         **session: Any) -> Optimizer:  # fmt: skip
    """Pick and configure an optimizer; ``session`` (storage, study, exclusive) goes to searches that resume.

    ``fallback="soft"`` adds soft prompt training after the discrete search when its dev score
    is below ``target`` or has plateaued, for predictors on in-process models.
    """
    if fallback not in (None, "soft"):
        from oobleck.errors import ConfigurationError

        raise ConfigurationError(f"fallback is None or 'soft', not {fallback!r}")
    chosen = _discrete(metric, trainset_size, devset_size, budget, max_demos, num_threads, seed, session)
    if fallback is None:
        return chosen
    from oobleck.optimizers.fallback import WithFallback
    from oobleck.optimizers.soft_prompt import SoftPrompt

    return WithFallback(chosen, SoftPrompt(metric, seed=seed, num_threads=num_threads), target=target, num_threads=num_threads)


def _discrete(metric: Callable[..., Any] | str, trainset_size: int, devset_size: int | None, budget: Budget | None, max_demos: int,
              num_threads: int, seed: int, session: dict[str, Any]) -> Optimizer:  # fmt: skip
    from oobleck.optimizers.bayesian import Bayesian
    from oobleck.optimizers.bootstrap import BootstrapFewShot, LabeledFewShot
    from oobleck.optimizers.random_search import RandomSearch

    dev = devset_size if devset_size is not None else trainset_size
    if trainset_size < 8:
        return LabeledFewShot(max_demos, seed=seed)
    if trainset_size < 24 or dev < 10:
        return BootstrapFewShot(metric, max_demos=max_demos, num_threads=num_threads, seed=seed)
    calls = budget.max_lm_calls if budget is not None else None
    minibatch = min(25, dev)
    # Setup (bootstraps, proposals, the baseline) takes about 2 dev passes and the final choice 4
    # (the top 3 and one refinement); trials get the rest.
    trials = 24 if calls is None else max(6, min(40, (calls - 6 * dev) // max(minibatch, 1)))
    if trainset_size < 40 and calls is not None and trials < 8:
        return RandomSearch(metric, num_candidates=4, max_demos=max_demos, num_threads=num_threads, seed=seed, display_progress=False)
    return Bayesian(metric, num_trials=int(trials), minibatch_size=minibatch, max_demos=max_demos, budget=budget,
                    num_threads=num_threads, seed=seed, **session)  # fmt: skip
