"""Optimizers: search instructions and demos for a program against a metric (and train soft prompts)."""

from typing import Any

from oobleck.optimizers.auto import auto
from oobleck.optimizers.base import Candidate, Optimizer
from oobleck.optimizers.bayesian import Bayesian
from oobleck.optimizers.bootstrap import BootstrapFewShot, LabeledFewShot
from oobleck.optimizers.copro import COPRO
from oobleck.optimizers.ensemble import Ensemble, EnsembleProgram, majority_vote
from oobleck.optimizers.fallback import WithFallback
from oobleck.optimizers.knn import KNNFewShot
from oobleck.optimizers.proposer import InstructionProposer
from oobleck.optimizers.random_search import RandomSearch
from oobleck.optimizers.reflective import Reflective

__all__ = ["COPRO", "Bayesian", "BootstrapFewShot", "Candidate", "Ensemble", "EnsembleProgram", "InstructionProposer", "KNNFewShot", "LabeledFewShot", "Optimizer", "RandomSearch", "Reflective", "SoftPrompt", "WithFallback", "auto", "majority_vote", "train_multitask_source"]



def __getattr__(name: str) -> Any:
    # Soft prompts pull in torch and peft; they load on first use.
    if name == "SoftPrompt":
        from oobleck.optimizers.soft_prompt import SoftPrompt

        return SoftPrompt
    if name == "train_multitask_source":
        from oobleck.optimizers.soft_prompt.multitask import train_multitask_source

        return train_multitask_source
    raise AttributeError(f"module 'oobleck.optimizers' has no attribute {name!r}")
