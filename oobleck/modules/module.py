"""``Module``: the base of every program; finds its predictors by attribute name.

Predictors are named by where they sit (``"hop.generate_query"``, ``"steps.0"``), which is
how optimizers address them and how artifacts match saved state back to a program, never
by position.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from oobleck.lm.base import BaseLM
    from oobleck.modules.predict import Predict

__all__ = ["Module"]

logger = logging.getLogger("oobleck.modules")

_Part = TypeVar("_Part")


class Module:
    """Subclass, create predictors in ``__init__`` and compose them in ``forward``."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        """Async forward; by default runs ``forward`` in a worker thread (context kept)."""
        import asyncio  # imported on use: asyncio costs ~20 ms of ``import oobleck``

        return await asyncio.to_thread(self.forward, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return await self.aforward(*args, **kwargs)

    # -- structure ---------------------------------------------------------------------------

    def named_predictors(self) -> list[tuple[str, Predict]]:
        """Every predictor reachable from this module, with its dotted attribute path."""
        from oobleck.modules.predict import Predict

        return self.named_parts(Predict)

    def named_parts(self, kind: type[_Part]) -> list[tuple[str, _Part]]:
        """Every part of type ``kind`` (predictors, retrievers) reachable from this module, by dotted attribute path.

        Attributes, list and tuple items and string-keyed dict values are followed; names
        starting with ``_`` are private and skipped; each object is reported once, at the first
        path that reaches it. A module that is itself a ``kind`` is named ``self``.
        """
        if isinstance(self, kind):
            return [("self", self)]
        found: list[tuple[str, _Part]] = []
        seen: set[int] = {id(self)}

        def visit(value: Any, path: str) -> None:
            if id(value) in seen:
                return
            if isinstance(value, kind):
                seen.add(id(value))
                found.append((path, value))
            elif isinstance(value, Module):
                seen.add(id(value))
                for key, child in vars(value).items():
                    if not key.startswith("_"):
                        visit(child, f"{path}.{key}")
            elif isinstance(value, (list, tuple)):
                for i, child in enumerate(value):
                    visit(child, f"{path}.{i}")
            elif isinstance(value, dict):
                for key, child in value.items():
                    if isinstance(key, str):
                        visit(child, f"{path}.{key}")

        for key, value in vars(self).items():
            if not key.startswith("_"):
                visit(value, key)
        return found

    def predictors(self) -> list[Predict]:
        return [p for _, p in self.named_predictors()]

    def predictor(self, name: str) -> Predict:
        from oobleck.errors import ConfigurationError

        for key, p in self.named_predictors():
            if key == name:
                return p
        names = [n for n, _ in self.named_predictors()]
        raise ConfigurationError(f"{type(self).__name__} has no predictor named {name!r}; it has {names}")

    def set_lm(self, lm: BaseLM) -> None:
        """Use ``lm`` for every predictor of this program."""
        for p in self.predictors():
            p.lm = lm

    # -- copies ------------------------------------------------------------------------------

    def deepcopy(self) -> Module:
        """A copy whose predictors' demos and signatures can change independently.

        LMs and other shared resources (clients, indexes) are shared, not copied.
        """
        from oobleck.lm.base import BaseLM

        memo: dict[int, Any] = {}
        for p in self.predictors():
            if isinstance(p.lm, BaseLM):
                memo[id(p.lm)] = p.lm
        return _copy_modules_in(self, memo)

    def _copy_predictors_only(self, memo: dict[int, Any]) -> Module:
        clone = copy.copy(self)
        memo[id(self)] = clone
        for key, value in vars(self).items():
            setattr(clone, key, _copy_modules_in(value, memo))
        return clone

    def reset_copy(self) -> Module:
        """A deep copy with every predictor's demos cleared (the uncompiled starting point)."""
        clone = self.deepcopy()
        for p in clone.predictors():
            p.demos = []
        return clone

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path, **provenance: Any) -> Path:
        """Write the program's compiled state as an artifact folder (see ``ob.load``)."""
        from oobleck.artifact import save_program  # artifact sits above modules; imported on use

        return save_program(self, path, provenance=provenance or getattr(self, "compile_info", None))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={p.signature.signature!r}" for n, p in self.named_predictors())
        return f"{type(self).__name__}({inner})"


def _copy_modules_in(value: Any, memo: dict[int, Any]) -> Any:
    """Copy the modules inside ``value`` (in the containers ``named_predictors`` walks).

    A module that ``copy.deepcopy`` cannot copy (it holds a lock, a client) is copied
    attribute by attribute instead, so its predictors are still separated; ``memo`` keeps
    shared objects (LMs, one predictor under two names) shared in the copy.
    """
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, Module):
        trial = dict(memo)  # a failed deepcopy may leave half-built copies in its memo
        try:
            result = copy.deepcopy(value, trial)
        except Exception as exc:  # noqa: BLE001 - fall back to a copy that still separates predictors
            logger.debug("deepcopy of %s failed (%s); copying predictors only", type(value).__name__, exc)
            return value._copy_predictors_only(memo)
        memo.update(trial)
        return result
    if isinstance(value, list):
        return [_copy_modules_in(v, memo) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_modules_in(v, memo) for v in value)
    if isinstance(value, dict):
        return {k: _copy_modules_in(v, memo) for k, v in value.items()}
    return value
