"""Modules: programs and the predictors inside them."""

from oobleck.modules.module import Module
from oobleck.modules.predict import ChainOfThought, Predict
from oobleck.modules.trace import TraceEntry, trace

__all__ = ["ChainOfThought", "Module", "Predict", "TraceEntry", "trace"]
