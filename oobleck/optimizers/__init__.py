"""Optimizers: search instructions and demos for a program against a metric."""

from oobleck.optimizers.base import Candidate, Optimizer
from oobleck.optimizers.bootstrap import BootstrapFewShot, LabeledFewShot
from oobleck.optimizers.random_search import RandomSearch

__all__ = ["BootstrapFewShot", "Candidate", "LabeledFewShot", "Optimizer", "RandomSearch", "get_optimizer"]

_BY_NAME = {"labeled": LabeledFewShot, "bootstrap": BootstrapFewShot, "random": RandomSearch, "random_search": RandomSearch}


def get_optimizer(name: str) -> type[Optimizer]:
    """An optimizer class by its CLI name."""
    from oobleck.errors import ConfigurationError

    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigurationError(f"unknown optimizer {name!r}; known: {sorted(_BY_NAME)}") from None
