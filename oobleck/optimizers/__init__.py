"""Optimizers: search instructions and demos for a program against a metric."""

from oobleck.optimizers.auto import auto
from oobleck.optimizers.base import Candidate, Optimizer
from oobleck.optimizers.bayesian import Bayesian
from oobleck.optimizers.bootstrap import BootstrapFewShot, LabeledFewShot
from oobleck.optimizers.ensemble import Ensemble, EnsembleProgram, majority_vote
from oobleck.optimizers.knn import KNNFewShot
from oobleck.optimizers.proposer import InstructionProposer
from oobleck.optimizers.random_search import RandomSearch

__all__ = ["Bayesian", "InstructionProposer", "auto", "BootstrapFewShot", "Candidate", "Ensemble", "EnsembleProgram", "KNNFewShot", "LabeledFewShot", "Optimizer", "RandomSearch", "majority_vote"]

