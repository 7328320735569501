"""Evaluation: run a program over a dev set and score it."""

from oobleck.evaluate import metrics
from oobleck.evaluate.evaluate import Evaluate, EvaluationResult, ExampleResult, TooManyErrors

__all__ = ["Evaluate", "EvaluationResult", "ExampleResult", "TooManyErrors", "metrics"]
