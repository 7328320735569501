"""The soft prompt training loop: PEFT model, losses, dev-metric selection, checkpoints.

Batches pad on the right (PEFT's positions are right there) and are drawn by length so little
compute goes to padding. Generation outputs learn the output span only; classification outputs
learn a verbalizer loss (a softmax over the label words' sequence scores, so multi-token labels
count whole); encoders learn their classification head's loss. Every ``eval_every`` steps the
real program runs on the dev set with the current prompt and the best is kept; training stops
early after ``patience`` evaluations without a gain. A checkpoint (one safetensors file, written
atomically, with a fingerprint of the data, model and settings) after each evaluation lets a
killed run resume where it stopped; a checkpoint of any other run is ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oobleck.errors import ConfigurationError
from oobleck.lm.hf_backend import HuggingFaceLM, is_encoder
from oobleck.lm.soft_prompt import (
    EncoderClassifierLM,
    SoftPromptLM,
    SoftPromptState,
    describe_config,
    load_encoder_classifier,
    weights_sha256,
)
from oobleck.optimizers.soft_prompt.methods import DEFAULT_LR, MethodSettings, init_from_text, make_config

__all__ = ["SoftPromptTrainer", "TrainingRecord", "TrainingRun", "machine_threads"]

logger = logging.getLogger("oobleck.optimizers.soft_prompt")
HEAD_LR = 1e-2
CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainingRecord:
    """One training example as the model sees it: prompt messages, the target completion, the label index."""

    messages: list[dict[str, str]]
    target: str
    label: int | None = None
    task_id: int = 0


@dataclass
class TrainingRun:
    """What a training run leaves: the best prompt, its dev score and the curve that led there."""

    state: SoftPromptState
    best_score: float
    best_step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0
    steps: int = 0
    stopped: str = ""


def machine_threads() -> int:
    """CPU threads torch should use here: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class SoftPromptTrainer:
    """Trains one soft prompt for one predictor's LM; ``fit`` returns the best prompt on the dev metric."""

    def __init__(self, lm: HuggingFaceLM, settings: MethodSettings, *, labels: list[str] | None, choices: list[str] | None,
                 steps: int = 300, batch_size: int = 16, lr: float | None = None, eval_every: int = 25, patience: int = 4,
                 seed: int = 0, max_seconds: float | None = None, checkpoint_dir: str | os.PathLike[str] | None = None,
                 display_progress: bool = True, warmup: int = 0):  # fmt: skip
        self.lm = lm
        self.settings = settings
        self.labels = labels
        self.choices = choices
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr if lr is not None else DEFAULT_LR[settings.method]
        self.eval_every = max(1, eval_every)
        self.patience = patience
        self.seed = seed
        self.max_seconds = max_seconds
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.display_progress = display_progress
        self.warmup = warmup
        self.encoder = is_encoder(lm.path)
        if self.encoder and not labels:
            raise ConfigurationError(f"{lm.model} is an encoder: soft prompts on it learn classification outputs (Literal, bool or enum) only")

    # -- model ---------------------------------------------------------------------------------

    def build(self, init_text: str | None, *, source_path: str | None = None, source_task: int | None = None) -> tuple[Any, Any, Any, bool]:
        """(tokenizer, base model, PEFT model, initialised from text?) ready to train."""
        import peft
        import torch

        torch.manual_seed(self.seed)
        if self.encoder:
            tokenizer, model = load_encoder_classifier(self.lm.path, len(self.labels or []), self.lm.device_name)
            task_type = "SEQ_CLS"
        else:
            tokenizer, model = self.lm.load()
            task_type = "CAUSAL_LM"
        text_in_config = bool(init_text) and self.settings.method in ("prompt_tuning", "multitask_prompt_tuning") and not source_path
        config = make_config(self.settings, task_type=task_type, model=model, init_text=init_text if text_in_config else None,
                             tokenizer_path=self.lm.path, source_path=source_path, source_task=source_task)  # fmt: skip
        peft_model = peft.get_peft_model(model, config)
        initialised = text_in_config
        if init_text and not text_in_config and not source_path:
            initialised = init_from_text(peft_model, model, tokenizer, self.settings, init_text)
        return tokenizer, model, peft_model, initialised

    # -- data ----------------------------------------------------------------------------------

    def encode(self, records: Sequence[Any], tokenizer: Any) -> list[dict[str, Any]]:
        """Token ids per record: the prompt, and the target (with end of text) or the label."""
        encoded = []
        eos = tokenizer.eos_token_id
        for record in records:
            if self.encoder:
                text = "\n".join(m["content"] for m in record.messages)
                ids = list(tokenizer(text, truncation=True, max_length=512)["input_ids"])
                encoded.append({"prompt": ids, "target": [], "label": record.label, "task_id": record.task_id})
                continue
            prompt = self.lm.prompt_ids(record.messages)
            target = list(tokenizer(record.target, add_special_tokens=False)["input_ids"]) + [eos]
            encoded.append({"prompt": prompt, "target": target, "label": record.label, "task_id": record.task_id})
        limit = self.lm.context_length if not self.encoder else 512
        virtual = self.settings.num_virtual_tokens
        kept = [e for e in encoded if len(e["prompt"]) + len(e["target"]) + virtual <= limit]
        if len(kept) < len(encoded):
            logger.warning("%d training records are longer than the model's %d tokens and were left out", len(encoded) - len(kept), limit)
        if not kept:
            raise ConfigurationError("no training record fits the model's context with the soft prompt in front")
        return kept

    def _choice_ids(self, tokenizer: Any) -> list[list[int]]:
        return [list(tokenizer(c, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id] for c in self.choices or []]

    def _batches(self, items: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
        """The examples of ``step``: a seeded draw, so a resumed run sees the same batches."""
        rng = random.Random(self.seed * 1_000_003 + step)
        size = min(self.batch_size, len(items))
        return rng.sample(items, size)

    # -- losses --------------------------------------------------------------------------------

    def loss(self, peft_model: Any, batch: list[dict[str, Any]], choice_ids: list[list[int]]) -> tuple[Any, int]:
        """The batch's mean loss and how many tokens it ran."""
        import torch

        device = peft_model.device if hasattr(peft_model, "device") else next(peft_model.parameters()).device
        if self.encoder:
            rows = [e["prompt"] for e in batch]
            ids, mask = _right_pad(rows, self.lm_pad, device)
            labels = torch.tensor([e["label"] for e in batch], device=device)
            output = peft_model(input_ids=ids, attention_mask=mask, labels=labels)
            return output.loss, int(mask.sum())
        task_kw = self._task_ids(batch, device, per_choice=1)
        if choice_ids and all(e["label"] is not None for e in batch):
            rows, spans = [], []
            for e in batch:
                for ids in choice_ids:
                    rows.append(e["prompt"] + ids)
                    spans.append(len(ids))
            ids, mask = _right_pad(rows, self.lm_pad, device)
            kw = self._task_ids(batch, device, per_choice=len(choice_ids))
            logits = peft_model(input_ids=ids, attention_mask=mask, **kw).logits[:, -ids.shape[1] :]
            scores = []
            for row, (tokens, span) in enumerate(zip(rows, spans, strict=True)):  # normalise the label spans only
                end = len(tokens)
                target = ids[row, end - span : end]
                span_logprobs = torch.log_softmax(logits[row, end - span - 1 : end - 1].float(), dim=-1)
                scores.append(span_logprobs.gather(1, target[:, None]).sum())
            table = torch.stack(scores).view(len(batch), len(choice_ids))
            gold = torch.tensor([e["label"] for e in batch], device=device)
            return torch.nn.functional.cross_entropy(table, gold), int(mask.sum())
        rows = [e["prompt"] + e["target"] for e in batch]
        ids, mask = _right_pad(rows, self.lm_pad, device)
        labels = torch.full_like(ids, -100)
        for row, e in enumerate(batch):
            start = len(e["prompt"])
            labels[row, start : start + len(e["target"])] = ids[row, start : start + len(e["target"])]
        output = peft_model(input_ids=ids, attention_mask=mask, labels=labels, **task_kw)
        return output.loss, int(mask.sum())

    def _fingerprint_of(self, items: list[dict[str, Any]], init_text: str | None, source_path: str | None, source_task: int | None) -> str:
        """What makes two training runs the same run: a checkpoint resumes only its own."""
        import hashlib

        digest = hashlib.sha256()
        source = hashlib.sha256(Path(source_path).read_bytes()).hexdigest() if source_path else None
        settings = [vars(self.settings), self.steps, self.batch_size, self.lr, self.warmup, self.seed, self.labels, self.choices, init_text,
                    source, source_task, weights_sha256(self.lm.path)]  # fmt: skip
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for item in items:
            digest.update(json.dumps([item["prompt"], item["target"], item["label"], item["task_id"]]).encode())
        return digest.hexdigest()

    def _task_ids(self, batch: list[dict[str, Any]], device: Any, per_choice: int) -> dict[str, Any]:
        if self.settings.method != "multitask_prompt_tuning":
            return {}
        import torch

        return {"task_ids": torch.tensor([e["task_id"] for e in batch for _ in range(per_choice)], device=device)}

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, records: Sequence[TrainingRecord], evaluate: Callable[[HuggingFaceLM], float] | None, *, init_text: str | None,
            source_path: str | None = None, source_task: int | None = None, task_id: int | None = None) -> TrainingRun:  # fmt: skip
        """Train on ``records``; ``evaluate(lm)`` scores an LM with the current prompt on the dev set (higher is better)."""
        import torch
        from peft import get_peft_model_state_dict

        started = time.perf_counter()
        on_cuda = self.lm.device_name in (None, "cuda") and torch.cuda.is_available()
        if not on_cuda:
            torch.set_num_threads(machine_threads())
        tokenizer, model, peft_model, initialised = self.build(init_text, source_path=source_path, source_task=source_task)
        self.lm_pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        items = self.encode(records, tokenizer)
        self._fingerprint = self._fingerprint_of(items, init_text, source_path, source_task)
        choice_ids = self._choice_ids(tokenizer) if not self.encoder else []
        named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
        trainable = [p for _, p in named]
        head = [p for n, p in named if "modules_to_save" in n]  # an encoder's fresh classification head learns at its own rate
        groups = [{"params": [p for n, p in named if "modules_to_save" not in n], "lr": self.lr}]
        if head:
            groups.append({"params": head, "lr": HEAD_LR})
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        total = max(1, self.steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / self.warmup) if self.warmup and s < self.warmup else max(0.0, 1 - s / total) * 0.9 + 0.1
        )
        history: list[dict[str, Any]] = []
        best = {"score": -math.inf, "step": 0, "tensors": None}
        step, tokens, stale = 0, 0, 0
        resumed = self._resume(peft_model, optimizer, schedule)
        if resumed is not None:
            step, tokens, stale, history, best = resumed
            logger.info("soft prompt training resumed at step %d from %s", step, self.checkpoint_dir)
        config = describe_config(next(iter(peft_model.peft_config.values())))
        for key in ("base_model_name_or_path", "tokenizer_name_or_path"):  # the model's id, not this machine's path to it
            if config.get(key):
                config[key] = self.lm.model
        base_sha = weights_sha256(self.lm.path)

        def snapshot() -> dict[str, Any]:
            return {k: v.detach().clone().cpu() for k, v in get_peft_model_state_dict(peft_model).items()}

        def state_of(tensors: dict[str, Any]) -> SoftPromptState:
            return SoftPromptState(self.settings.method, config, tensors, self.lm.model, base_sha, "encoder_classifier" if self.encoder else "causal",
                                   self.labels, task_id, {"init": "text" if initialised else "random"})  # fmt: skip

        live = self._live_lm(state_of({}), peft_model, tokenizer) if evaluate is not None else None

        def score_now() -> float:
            if evaluate is None or live is None:
                return -float(history[-1]["loss"]) if history else 0.0
            peft_model.eval()
            try:
                with torch.inference_mode():
                    return float(evaluate(live))
            finally:
                peft_model.train()

        if resumed is None and evaluate is not None:  # the starting point (text init or random) is a candidate too
            first = score_now()
            history.append({"step": 0, "loss": None, "dev": first, "seconds": round(time.perf_counter() - started, 2)})
            best = {"score": first, "step": 0, "tensors": snapshot()}
        progress = _progress(self.display_progress, total)
        task = progress.add_task("soft prompt", total=total, completed=step, loss=float("nan"), dev=best["score"]) if progress else None
        stopped = "steps"
        peft_model.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
        running = None
        try:
            while step < total:
                batch = self._batches(items, step)
                with autocast:
                    loss, ran = self.loss(peft_model, batch, choice_ids)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens += ran
                value = float(loss.detach())
                running = value if running is None else 0.9 * running + 0.1 * value
                if progress is not None:
                    progress.update(task, completed=step, loss=running)
                if step % self.eval_every == 0 or step == total:
                    score = score_now()
                    history.append({"step": step, "loss": round(running, 5), "dev": score, "seconds": round(time.perf_counter() - started, 2)})
                    if score > best["score"]:
                        best, stale = {"score": score, "step": step, "tensors": snapshot()}, 0
                    else:
                        stale += 1
                    if progress is not None:
                        progress.update(task, dev=best["score"])
                    self._checkpoint(peft_model, optimizer, schedule, step, tokens, stale, history, best)
                    if evaluate is not None and best["score"] >= 1.0:
                        stopped = "perfect dev score"
                        break
                    if evaluate is not None and self.patience and stale >= self.patience:
                        stopped = f"no dev gain in {self.patience} evaluations"
                        break
                if self.max_seconds is not None and time.perf_counter() - started > self.max_seconds:
                    stopped = f"time limit of {self.max_seconds:.0f} s"
                    if not history or history[-1]["step"] != step:
                        score = score_now()
                        history.append({"step": step, "loss": round(running or 0.0, 5), "dev": score, "seconds": round(time.perf_counter() - started, 2)})
                        if score > best["score"]:
                            best = {"score": score, "step": step, "tensors": snapshot()}
                    break
        finally:
            if progress is not None:
                progress.stop()
            peft_model.eval()
            if not self.encoder:
                model.eval()
        tensors = best["tensors"] if best["tensors"] is not None else snapshot()
        state = state_of(tensors)
        state.info.update({"best_step": best["step"], "dev_score": best["score"], "steps": step, "stopped": stopped})
        return TrainingRun(state, float(best["score"]), int(best["step"]), history, time.perf_counter() - started, tokens, step, stopped)

    def _live_lm(self, state: SoftPromptState, peft_model: Any, tokenizer: Any) -> HuggingFaceLM:
        """One LM over the model being trained (no copy, no cache) for every dev evaluation of a run."""
        if self.encoder:
            live: HuggingFaceLM = EncoderClassifierLM(self.lm, state, cache=False)
            live._tokenizer, live._model = tokenizer, peft_model
            return live
        live = SoftPromptLM(self.lm, state, cache=False)
        live._peft = peft_model
        return live

    # -- checkpoints ---------------------------------------------------------------------------

    def _checkpoint(self, peft_model: Any, optimizer: Any, schedule: Any, step: int, tokens: int, stale: int,
                    history: list[dict[str, Any]], best: dict[str, Any]) -> None:  # fmt: skip
        """One safetensors file (weights, optimizer moments, best prompt; the rest as its metadata), replaced atomically."""
        if self.checkpoint_dir is None:
            return
        from safetensors.torch import save_file

        folder = self.checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"param.{n}": p.detach().cpu().contiguous() for n, p in peft_model.named_parameters() if p.requires_grad}
        scalars = {}
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if hasattr(value, "shape") and value.dim() > 0:
                    tensors[f"adam.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}.{key}"] = float(value)
        if best["tensors"] is not None:
            tensors.update({f"best.{k}": v.contiguous() for k, v in best["tensors"].items()})
        meta = {"step": step, "tokens": tokens, "stale": stale, "history": history, "best_score": best["score"], "best_step": best["step"],
                "adam_scalars": scalars, "schedule": schedule.state_dict()["last_epoch"], "fingerprint": self._fingerprint}  # fmt: skip
        _atomic(folder / CHECKPOINT, lambda path: save_file(tensors, str(path), metadata={"oobleck": json.dumps(meta)}))

    def _resume(self, peft_model: Any, optimizer: Any, schedule: Any) -> tuple[int, int, int, list[dict[str, Any]], dict[str, Any]] | None:
        """The state of an earlier run of this same training (same fingerprint), or None to start afresh."""
        path = self.checkpoint_dir / CHECKPOINT if self.checkpoint_dir is not None else None
        if path is None or not path.is_file():
            return None
        import torch
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {}).get("oobleck", "{}"))
            tensors = load_file(str(path))
        except (OSError, ValueError, SafetensorError) as exc:
            logger.warning("ignoring an unreadable soft prompt checkpoint %s: %s", path, exc)
            return None
        if meta.get("fingerprint") != self._fingerprint:
            logger.warning("the checkpoint %s is of another training run (data, model or settings differ); starting afresh", path)
            return None
        try:
            params = dict(peft_model.named_parameters())
            with torch.no_grad():
                for key, value in tensors.items():
                    if key.startswith("param."):
                        params[key[6:]].copy_(value.to(params[key[6:]].device))
            state = optimizer.state_dict()
            by_index: dict[int, dict[str, Any]] = {}
            for key, value in tensors.items():
                if key.startswith("adam."):
                    _, index, name = key.split(".", 2)
                    by_index.setdefault(int(index), {})[name] = value
            for key, value in meta.get("adam_scalars", {}).items():
                index, name = key.split(".", 1)
                by_index.setdefault(int(index), {})[name] = torch.tensor(value)
            state["state"] = by_index
            optimizer.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as exc:
            logger.warning("the checkpoint %s does not fit this model (%s); starting afresh", path, exc)
            return None
        for _ in range(int(meta.get("schedule", 0))):
            schedule.step()
        best_tensors = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        best = {"score": meta.get("best_score", -math.inf), "step": meta.get("best_step", 0), "tensors": best_tensors}
        return int(meta["step"]), int(meta.get("tokens", 0)), int(meta.get("stale", 0)), list(meta.get("history", [])), best


def _right_pad(rows: list[list[int]], pad: int, device: Any) -> tuple[Any, Any]:
    import torch

    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                        TextColumn("dev {task.fields[dev]:.3f}"), TimeElapsedColumn(), transient=True)  # fmt: skip
    progress.start()
    return progress
