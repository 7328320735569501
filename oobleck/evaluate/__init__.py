"""Evaluation: run a program over a dev set and score it."""

from oobleck.evaluate import metrics
from oobleck.evaluate.evaluate import Evaluate, EvaluationResult, ExampleResult, TooManyErrors
from oobleck.evaluate.significance import GainInterval, paired_bootstrap

__all__ = ["Evaluate", "EvaluationResult", "ExampleResult", "GainInterval", "TooManyErrors", "metrics", "paired_bootstrap"]
