"""``SoftPrompt``: gradient-trained soft prompts for predictors on in-process Hugging Face models.

The bridge from discrete search: the soft prompt starts from the predictor's current (best
discrete) instruction, trains on the traces the program's own successful runs leave (each
predictor's inputs and outputs, as bootstrapping keeps them) plus the labelled train set, keeps
the discrete demos in the prompt or drops them (both are tried when there are demos, and the
dev metric chooses), and the dev metric picks the step to keep.
"""

from __future__ import annotations

import enum
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from oobleck.errors import ConfigurationError
from oobleck.evaluate.evaluate import Evaluate
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example
from oobleck.lm.hf_backend import HuggingFaceLM, is_encoder
from oobleck.lm.soft_prompt import METHODS, EncoderClassifierLM, SoftPromptLM, SoftPromptState
from oobleck.lm.usage import track_usage
from oobleck.modules.module import Module
from oobleck.modules.predict import Predict
from oobleck.optimizers.base import Candidate, Optimizer, check_trainset
from oobleck.optimizers.bootstrap import bootstrap_candidate
from oobleck.optimizers.soft_prompt.methods import MethodSettings
from oobleck.optimizers.soft_prompt.trainer import SoftPromptTrainer, TrainingRecord, TrainingRun
from oobleck.signatures.types import choices_of

__all__ = ["SoftPrompt", "build_records", "soft_prompt_eligibility"]

logger = logging.getLogger("oobleck.optimizers.soft_prompt")


def _base_lm(predictor: Predict) -> Any:
    lm = predictor.lm
    if lm is None:
        from oobleck.settings import get_setting

        lm = get_setting("lm")
    if isinstance(lm, (SoftPromptLM, EncoderClassifierLM)):
        lm = lm.base
    return lm


def soft_prompt_eligibility(program: Module) -> tuple[dict[str, HuggingFaceLM], dict[str, str]]:
    """Predictors a soft prompt can train on (name -> their in-process LM), and why the others cannot."""
    eligible: dict[str, HuggingFaceLM] = {}
    reasons: dict[str, str] = {}
    for name, predictor in program.named_predictors():
        lm = _base_lm(predictor)
        if lm is None:
            reasons[name] = "it has no LM configured"
        elif not isinstance(lm, HuggingFaceLM):
            reasons[name] = f"its LM {getattr(lm, 'budget_id', type(lm).__name__)!r} is not an in-process Hugging Face model ('hf/...')"
        else:
            eligible[name] = lm
    return eligible, reasons


class SoftPrompt(Optimizer):
    """Train a soft prompt per eligible predictor; ``method`` is one of prompt_tuning, prefix_tuning, p_tuning,
    multitask_prompt_tuning.

    ``init`` is ``"instruction"`` (start from the predictor's instruction text, or from
    ``init_text`` when given: e.g. the best instruction a discrete search found) or ``"random"``;
    ``keep_demos`` is ``"search"``, True or False; ``source`` is a multi-task source prompt
    (from ``train_multitask_source``) that multi-task prompt tuning adapts to this task.
    ``checkpoint_dir`` makes training resumable; ``max_seconds`` caps each training run.
    """

    def __init__(self, metric: Callable[..., Any] | str, *, method: str = "prompt_tuning", num_virtual_tokens: int = 16, init: str = "instruction",
                 init_text: str | None = None,
                 keep_demos: bool | str = "search", steps: int = 300, batch_size: int = 16, lr: float | None = None, eval_every: int = 25,
                 patience: int = 4, warmup: int | None = None, reparameterize: bool = True, encoder: str = "mlp", encoder_hidden_size: int | None = None,
                 source: SoftPromptState | None = None, use_traces: bool = True, num_threads: int = 8, seed: int = 0,
                 max_seconds: float | None = None, checkpoint_dir: str | os.PathLike[str] | None = None, display_progress: bool = True):  # fmt: skip
        if method not in METHODS:
            raise ConfigurationError(f"unknown soft prompt method {method!r}; choose one of {', '.join(METHODS)}")
        if init not in ("instruction", "random"):
            raise ConfigurationError(f"init is 'instruction' or 'random', not {init!r}")
        if keep_demos not in (True, False, "search"):
            raise ConfigurationError(f"keep_demos is True, False or 'search', not {keep_demos!r}")
        if source is not None and method != "multitask_prompt_tuning":
            raise ConfigurationError("a source prompt is for method='multitask_prompt_tuning'")
        self.metric = get_metric(metric)
        self.method = method
        self.num_virtual_tokens = num_virtual_tokens
        self.init = init
        self.init_text = init_text
        self.keep_demos = keep_demos
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.eval_every = eval_every
        self.patience = patience
        self.warmup = warmup  # steps of linear warm-up; default a tenth of the steps, so a good text init is not thrown away at once
        self.reparameterize = reparameterize
        self.encoder = encoder
        self.encoder_hidden_size = encoder_hidden_size
        self._source = source
        self.use_traces = use_traces
        self.num_threads = num_threads
        self.seed = seed
        self.max_seconds = max_seconds
        self._checkpoint_dir = checkpoint_dir
        self._display_progress = display_progress
        self.runs: list[dict[str, Any]] = []
        MethodSettings(method, num_virtual_tokens, reparameterize, encoder, encoder_hidden_size)  # checks the settings now

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out.pop("runs", None)
        return out

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        train = check_trainset(trainset)
        dev = check_trainset(valset, "valset") if valset is not None else train
        eligible, reasons = soft_prompt_eligibility(program)
        if not eligible:
            why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
            raise ConfigurationError(f"no predictor can take a soft prompt ({why}); soft prompts train on in-process models only")
        for name, reason in reasons.items():
            logger.warning("predictor %r keeps its text prompt only: %s", name, reason)
        self.runs = []
        with track_usage() as usage:
            traces = self._traces(program, train) if self.use_traces else {}
            compiled = program.deepcopy()
            for name, lm in eligible.items():
                compiled = self._train_predictor(compiled, name, lm, train, dev, traces.get(name, []))
            # An encoder cannot answer without its trained head: there is no baseline to score.
            encoder = any(is_encoder(lm.path) for lm in eligible.values())
            baseline = None if encoder else Evaluate(devset=dev, metric=self.metric, num_threads=self.num_threads, display_progress=False)(program).score
            final = Evaluate(devset=dev, metric=self.metric, num_threads=self.num_threads, display_progress=False)(compiled).score
        scores = {"baseline_dev": baseline, "best_dev": final}
        candidate = Candidate.from_program(compiled, "soft_prompt")
        candidate.score = final
        compiled.compile_info = self._provenance(program, seed=self.seed, trainset=train, valset=valset, scores=scores,
                                                 candidates=[candidate], usage=usage, metric=self.metric)  # fmt: skip
        compiled.compile_info["soft_prompt"] = {"runs": self.runs, "skipped": reasons}
        logger.info("soft prompt: dev %s -> %.3f", "-" if baseline is None else f"{baseline:.3f}", final)
        return compiled

    # -- data ----------------------------------------------------------------------------------

    def _traces(self, program: Module, train: list[Example]) -> dict[str, list[dict[str, Any]]]:
        """Inputs and outputs of every predictor in the program's own runs that passed the metric."""
        candidate = bootstrap_candidate(program.deepcopy(), train, self.metric, max_demos=len(train), teacher=program,
                                        num_threads=self.num_threads, seed=self.seed, source="soft_prompt_traces")  # fmt: skip
        return candidate.demos

    # -- training ------------------------------------------------------------------------------

    def _train_predictor(self, program: Module, name: str, lm: HuggingFaceLM, train: list[Example], dev: list[Example],
                         traces: list[dict[str, Any]]) -> Module:  # fmt: skip
        predictor = dict(program.named_predictors())[name]
        output = next(iter(predictor.signature.output_fields.values()))
        labels = choices_of(output.annotation) if len(predictor.signature.output_fields) == 1 else None
        choices = predictor.resolve_adapter(lm).choice_completions(predictor.signature) if labels else None
        if labels and choices is None and not is_encoder(lm.path):
            labels = None  # this adapter cannot write label completions: learn the output as text instead
        options = [False, True] if self.keep_demos == "search" and predictor.demos else [bool(self.keep_demos) and bool(predictor.demos)]
        instruction = (self.init_text or predictor.signature.instructions) if self.init == "instruction" else None
        best: tuple[TrainingRun, bool] | None = None
        for keep in options:
            records = build_records(predictor, lm, train, traces, predictor.demos if keep else [], labels)
            run = self._fit(program, name, lm, records, dev, labels, choices, instruction, keep)
            self.runs.append({"predictor": name, "keep_demos": keep, "method": self.method, "init": run.state.info.get("init"),
                              "dev": run.best_score, "best_step": run.best_step, "steps": run.steps, "stopped": run.stopped,
                              "seconds": round(run.seconds, 2), "tokens": run.tokens, "records": len(records), "history": run.history})  # fmt: skip
            if best is None or run.best_score > best[0].best_score:
                best = (run, keep)
        assert best is not None
        run, keep = best
        result = program.deepcopy()
        target = dict(result.named_predictors())[name]
        target.soft_prompt = run.state
        if not keep:
            target.demos = []
        return result

    def _fit(self, program: Module, name: str, lm: HuggingFaceLM, records: list[TrainingRecord], dev: list[Example], labels: list[str] | None,
             choices: list[str] | None, instruction: str | None, keep: bool) -> TrainingRun:  # fmt: skip
        settings = MethodSettings(self.method, self.num_virtual_tokens, self.reparameterize, self.encoder, self.encoder_hidden_size)
        checkpoint = Path(self._checkpoint_dir) / f"{name}-{'demos' if keep else 'nodemos'}" if self._checkpoint_dir else None
        trainer = SoftPromptTrainer(lm, settings, labels=labels, choices=choices, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                                    eval_every=self.eval_every, patience=self.patience, seed=self.seed, max_seconds=self.max_seconds,
                                    checkpoint_dir=checkpoint, display_progress=self._display_progress,
                                    warmup=self.warmup if self.warmup is not None else self.steps // 10)  # fmt: skip
        candidate = program.deepcopy()
        target = dict(candidate.named_predictors())[name]
        if not keep:
            target.demos = []
        evaluator = Evaluate(devset=dev, metric=self.metric, num_threads=self.num_threads, display_progress=False)

        def evaluate(live: HuggingFaceLM) -> float:
            target.lm, target.soft_prompt = live, None
            return evaluator(candidate).score

        if self._source is None:
            return trainer.fit(records, evaluate, init_text=instruction)
        with tempfile.TemporaryDirectory(prefix="oobleck-mpt-") as folder:  # PEFT reads the source prompt from a file
            path = os.path.join(folder, "source.safetensors")
            self._source.save_tensors(path)
            return trainer.fit(records, evaluate, init_text=None, source_path=path, task_id=0)


def build_records(predictor: Predict, lm: HuggingFaceLM, train: Sequence[Example], traces: list[dict[str, Any]], demos: list[dict[str, Any]],
                  labels: list[str] | None, task_id: int = 0) -> list[TrainingRecord]:  # fmt: skip
    """Training records for one predictor: its traces and the labelled examples that carry its fields, as its adapter formats them."""
    adapter = predictor.resolve_adapter(lm)
    signature = predictor.signature
    fields = list(signature.input_fields) + list(signature.output_fields)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    labelled = [dict(e) for e in train if all(f in e for f in fields)]
    for row in [*traces, *labelled]:
        key = repr(sorted((k, repr(row.get(k))) for k in fields))
        if key not in seen:
            seen.add(key)
            rows.append(row)
    records = []
    for row in rows:
        inputs = {n: row[n] for n in signature.input_fields}
        outputs = {n: row[n] for n in signature.output_fields}
        own_demos = [d for d in demos if any(d.get(n) != row.get(n) for n in signature.input_fields)]
        label = None
        if labels is not None:
            value = next(iter(outputs.values()))
            value = str(value.value if isinstance(value, enum.Enum) else value)  # labels are an enum's values
            if value not in labels:
                continue
            label = labels.index(value)
        target = adapter.completion_text(signature, outputs)
        if target is None and labels is None:
            raise ConfigurationError(f"the {adapter.name} adapter cannot write a target completion to train a soft prompt on")
        records.append(TrainingRecord(adapter.format(signature, own_demos, inputs), target or "", label, task_id))
    if not records:
        raise ConfigurationError("no training data for the soft prompt: no trace passed the metric and no train example has the predictor's fields")
    return records
