"""Optimizers: search instructions and demos for a program against a metric."""

from oobleck.optimizers.base import Candidate, Optimizer
from oobleck.optimizers.bootstrap import BootstrapFewShot, LabeledFewShot
from oobleck.optimizers.random_search import RandomSearch

__all__ = ["BootstrapFewShot", "Candidate", "LabeledFewShot", "Optimizer", "RandomSearch"]

