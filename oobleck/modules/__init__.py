"""Modules: programs and the predictors inside them."""

from oobleck.modules.ensemble import EnsembleProgram
from oobleck.modules.knn import KNNDemos
from oobleck.modules.module import Module
from oobleck.modules.predict import ChainOfThought, Predict
from oobleck.modules.retrieve import Retrieve
from oobleck.modules.trace import TraceEntry, trace

__all__ = ["ChainOfThought", "EnsembleProgram", "KNNDemos", "Module", "Predict", "Retrieve", "TraceEntry", "trace"]
