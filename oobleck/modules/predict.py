"""``Predict`` and ``ChainOfThought``: the predictors optimizers tune.

A predictor holds what an optimizer changes (the signature's instructions and the demos) and
what a user pins (its LM, adapter and settings). Calling it checks the inputs against the
signature, formats the prompt with the adapter, calls the LM, coerces the outputs to their
declared types and records the call in the active trace.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from oobleck.adapters import Adapter, get_adapter
from oobleck.errors import ConfigurationError, InputError
from oobleck.example import Prediction
from oobleck.lm.base import BaseLM
from oobleck.modules.module import Module
from oobleck.modules.trace import record, tracing_active
from oobleck.settings import get_setting
from oobleck.signatures.field import OutputField
from oobleck.signatures.signature import Signature, ensure_signature
from oobleck.signatures.types import check_input, type_to_str

if TYPE_CHECKING:
    from oobleck.lm.soft_prompt import SoftPromptState
    from oobleck.modules.knn import DemoSelector

__all__ = ["ChainOfThought", "Predict"]

_CALL_OPTIONS = {"demos", "config", "lm"}


def _greedy_single(settings: Mapping[str, Any]) -> bool:
    """One greedy answer is asked for: the case where scoring the labels replaces generating."""
    return float(settings.get("temperature") or 0.0) == 0.0 and int(settings.get("n") or 1) == 1


class Predict(Module):
    """One LM call shaped by a signature: ``Predict("question -> answer")(question=...)``."""

    kind = "Predict"
    demo_selector: DemoSelector | None = None  # when set, picks each call's demos from its inputs (e.g. kNN) instead of ``demos``
    soft_prompt: SoftPromptState | None = None  # when set, a trained soft prompt applied on the predictor's (in-process) LM

    def __init__(self, signature: str | type[Signature], *, lm: BaseLM | None = None, adapter: str | Adapter | None = None,
                 demos: Sequence[Mapping[str, Any]] | None = None, **config: Any):  # fmt: skip
        self.signature = ensure_signature(signature)
        self.lm = lm
        self.adapter = adapter
        self.demos: list[dict[str, Any]] = [dict(d) for d in demos or []]
        self.config = config
        self._adapter_cache: tuple[Any, Adapter] | None = None

    # -- resolution --------------------------------------------------------------------------

    def resolve_lm(self, override: BaseLM | None = None) -> BaseLM:
        """The LM this call runs on: the override, the predictor's, or the configured one, with the soft prompt applied."""
        lm = override or self.lm or get_setting("lm")
        if lm is None:
            raise ConfigurationError(
                "no LM configured: call ob.configure(lm=ob.LM('openai/...')), use ob.context(lm=...), or pass lm= to the predictor"
            )
        if not isinstance(lm, BaseLM):
            raise ConfigurationError(f"the configured LM must be an ob.BaseLM, not {type(lm).__name__}")
        if self.soft_prompt is not None:
            return self._soft_prompted(lm)
        return lm

    def _soft_prompted(self, lm: BaseLM) -> BaseLM:
        bound = self.__dict__.get("_soft_bound")
        if bound is not None and bound[0] is lm and bound[1] is self.soft_prompt:
            return bound[2]
        applied = self.soft_prompt.bind(lm)  # type: ignore[union-attr]
        self.__dict__["_soft_bound"] = (lm, self.soft_prompt, applied)
        return applied

    def resolve_adapter(self, lm: BaseLM) -> Adapter:
        """Predictor's own adapter, else the configured one, else the LM's declared one, else chat."""
        spec = self.adapter or get_setting("adapter") or lm.adapter
        cached = self._adapter_cache
        if cached is not None and cached[0] is spec:
            return cached[1]
        adapter = get_adapter(spec)
        self._adapter_cache = (spec, adapter)
        return adapter

    def check_inputs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        fields = self.signature.input_fields
        missing = [n for n in fields if n not in kwargs]
        extra = [n for n in kwargs if n not in fields]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing {missing}")
            if extra:
                problems.append(f"unexpected {extra}")
            raise InputError(f"{type(self).__name__}({self.signature.signature!r}) called with {' and '.join(problems)}")
        for name, field in fields.items():
            annotation = field.annotation
            if annotation is not str and not check_input(kwargs[name], annotation):
                raise InputError(
                    f"input {name!r} should be {type_to_str(annotation)}, got {type(kwargs[name]).__name__}: {str(kwargs[name])[:60]!r}"
                )
        return dict(kwargs)

    # -- calls -------------------------------------------------------------------------------

    def _split(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], BaseLM]:
        # An input field may be named like a call option ("config -> summary"); the field wins.
        options = {k: kwargs.pop(k) for k in _CALL_OPTIONS if k in kwargs and k not in self.signature.input_fields}
        lm = self.resolve_lm(options.get("lm"))
        demos = options.get("demos", self.demos)
        settings = {**self.config, **options.get("config", {})}
        if getattr(lm, "supports_choices", False) and "choices" not in settings and _greedy_single({**lm.settings, **settings}):
            choices = self.resolve_adapter(lm).choice_completions(self.signature)
            if choices:  # an in-process model answers a classification output with one of its labels (config choices=None opts out)
                settings["choices"] = choices
        inputs = self.check_inputs(kwargs)
        if self.demo_selector is not None and "demos" not in options:
            demos = self.demo_selector.select(inputs)
        return inputs, demos, settings, lm

    def _prediction(self, inputs: dict[str, Any], outputs: list[dict[str, Any]]) -> Prediction:
        prediction = Prediction(outputs[0]) if len(outputs) == 1 else Prediction.from_completions(outputs)
        if tracing_active():
            record(self, inputs, dict(outputs[0]))
        return prediction

    def forward(self, **kwargs: Any) -> Prediction:
        inputs, demos, settings, lm = self._split(kwargs)
        outputs = self.resolve_adapter(lm)(lm, self.signature, demos, inputs, **settings)
        return self._prediction(inputs, outputs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        if self.demo_selector is not None:  # choosing demos embeds the query: keep that work off the event loop
            import asyncio  # imported on use: asyncio costs ~20 ms of ``import oobleck``

            inputs, demos, settings, lm = await asyncio.to_thread(self._split, kwargs)
        else:
            inputs, demos, settings, lm = self._split(kwargs)
        outputs = await self.resolve_adapter(lm).acall(lm, self.signature, demos, inputs, **settings)
        return self._prediction(inputs, outputs)

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise InputError(f"{type(self).__name__} takes keyword inputs only, e.g. {next(iter(self.signature.input_fields))}=...")
        return self.forward(**kwargs)

    # -- state -------------------------------------------------------------------------------

    def __deepcopy__(self, memo: dict[int, Any]) -> Predict:
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in vars(self).items():
            if key in ("lm", "soft_prompt"):  # shared, not copied: clients, loaded models, tensors
                setattr(clone, key, value)
            elif key == "_adapter_cache":
                clone._adapter_cache = None
            elif key == "_soft_bound":
                continue
            else:
                setattr(clone, key, copy.deepcopy(value, memo))
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature.signature!r}, demos={len(self.demos)})"


class ChainOfThought(Predict):
    """``Predict`` with a ``reasoning`` output written before the other outputs."""

    kind = "ChainOfThought"

    def __init__(self, signature: str | type[Signature], *, rationale_desc: str = "Think step by step to reach the answer.", **kwargs: Any):
        base = ensure_signature(signature)
        extended = base if "reasoning" in base.output_fields else base.prepend("reasoning", OutputField(desc=rationale_desc))
        super().__init__(extended, **kwargs)
