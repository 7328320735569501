"""``Ensemble``: combine several compiled programs into one ``EnsembleProgram``.

As in DSPy (``Ensemble(reduce_fn=..., size=...).compile(programs)``), compiling spends no LM
calls: it copies the members and records where each came from, so the ensemble's artifact
still says which optimizer, seed and data produced every member.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oobleck._json import to_jsonable
from oobleck.errors import ConfigurationError
from oobleck.example import Example
from oobleck.lm.usage import Usage
from oobleck.modules.ensemble import EnsembleProgram, Reducer, majority_vote, reducer_name
from oobleck.modules.module import Module
from oobleck.optimizers.base import Optimizer, check_trainset

__all__ = ["Ensemble", "EnsembleProgram", "majority_vote"]

# The parts of a member's compile_info worth keeping in the ensemble's: not its candidates table.
_MEMBER_KEYS = ("optimizer", "settings", "seed", "metric", "data", "scores", "usage", "lms")


class Ensemble(Optimizer):
    """``Ensemble(reducer="majority_vote", size=None, seed=0).compile(programs)``.

    ``reducer`` is a named reducer (saveable) or ``reducer(list[Prediction]) -> Prediction``;
    ``reduce_fn`` is accepted as DSPy's name for it. ``size`` members answer each call (all by
    default), chosen from ``seed`` and the call's inputs.
    """

    def __init__(self, reducer: str | Reducer = "majority_vote", *, size: int | None = None, seed: int = 0,
                 reduce_fn: str | Reducer | None = None):  # fmt: skip
        if reduce_fn is not None:
            if reducer != "majority_vote":
                raise ConfigurationError("pass either reducer= or reduce_fn= (DSPy's name for it), not both")
            reducer = reduce_fn
        self.reducer = reducer
        self.size = size
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        name = reducer_name(self.reducer)
        return {"reducer": name or getattr(self.reducer, "__name__", "callable"), "reducer_saveable": name is not None,
                "size": self.size, "seed": self.seed}  # fmt: skip

    def compile(self, programs: Sequence[Module], *, trainset: Sequence[Example] | None = None,  # type: ignore[override]
                valset: Sequence[Example] | None = None) -> EnsembleProgram:  # fmt: skip
        """An ``EnsembleProgram`` of copies of ``programs``; the programs themselves are not changed.

        ``trainset`` and ``valset`` are optional and only fingerprinted into ``compile_info``,
        so the ensemble can stand where other optimizers do in a chain.
        """
        if isinstance(programs, Module) or not isinstance(programs, (list, tuple)):
            raise ConfigurationError(f"Ensemble.compile takes a list of programs, not a {type(programs).__name__}")
        if not programs:
            raise ConfigurationError("Ensemble.compile needs at least one program")
        for i, program in enumerate(programs):
            if not isinstance(program, Module):
                raise ConfigurationError(f"program {i} given to Ensemble.compile is a {type(program).__name__}, not an ob.Module")
        members = [program.deepcopy() for program in programs]
        ensemble = EnsembleProgram(members, self.reducer, size=self.size, seed=self.seed)
        info = self._provenance(ensemble, seed=self.seed, trainset=check_trainset(trainset) if trainset is not None else [],
                                valset=check_trainset(valset, "valset") if valset is not None else None,
                                scores={}, candidates=[], usage=Usage())  # fmt: skip
        if trainset is None:
            info["data"] = {}
        info["members"] = [member_summary(program) for program in programs]
        ensemble.compile_info = info
        return ensemble


def member_summary(program: Module) -> dict[str, Any]:
    """A member's class and the headline of its own ``compile_info`` (no candidates table)."""
    info = getattr(program, "compile_info", None) or {}
    summary: dict[str, Any] = {"class": type(program).__name__}
    summary.update({key: to_jsonable(info[key]) for key in _MEMBER_KEYS if key in info})
    return summary
