"""The LM layer: one ``LM`` front, pluggable backends, cache, retries and usage."""

from oobleck.lm.base import BaseLM, Completion, RetryPolicy
from oobleck.lm.budget import Budget, Spend, set_price, spending
from oobleck.lm.cache import ResponseCache
from oobleck.lm.embedder import Embedder, SentenceTransformerEmbedder, get_embedder
from oobleck.lm.lm import LM
from oobleck.lm.usage import Usage, track_usage

__all__ = [
    "LM", "BaseLM", "Budget", "Completion", "Embedder", "ResponseCache", "RetryPolicy", "SentenceTransformerEmbedder", "Spend",
    "Usage", "get_embedder", "set_price", "spending", "track_usage",
]  # fmt: skip
