"""Optimizers: search instructions and demos for a program against a metric."""

from oobleck.optimizers.auto import auto
from oobleck.optimizers.base import Candidate, Optimizer
from oobleck.optimizers.bayesian import Bayesian
from oobleck.optimizers.bootstrap import BootstrapFewShot, LabeledFewShot
from oobleck.optimizers.copro import COPRO
from oobleck.optimizers.ensemble import Ensemble, EnsembleProgram, majority_vote
from oobleck.optimizers.knn import KNNFewShot
from oobleck.optimizers.proposer import InstructionProposer
from oobleck.optimizers.random_search import RandomSearch
from oobleck.optimizers.reflective import Reflective

__all__ = ["COPRO", "Bayesian", "BootstrapFewShot", "Candidate", "Ensemble", "EnsembleProgram", "InstructionProposer", "KNNFewShot", "LabeledFewShot", "Optimizer", "RandomSearch", "Reflective", "auto", "majority_vote"]

