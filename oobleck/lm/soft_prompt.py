"""Soft prompts on in-process Hugging Face models: the trained tensors, and the LMs that apply them.

A ``SoftPromptState`` is what training leaves behind: PEFT's adapter tensors for one prompt-learning
method, the PEFT config, and the identity of the base weights they were trained against (a
soft prompt is meaningless on any other model, so binding checks the sha256 of the weights).
``SoftPromptState.bind(lm)`` returns an LM with the prompt applied that every oobleck path (Predict,
Evaluate, the server) calls like any other LM.

Left padding: PEFT prepends virtual tokens in front of the padding and drops position ids, so
a batch of prompts of different lengths would see other positions than one prompt alone does.
Generation here builds ``[padding][virtual tokens][prompt]`` rows itself and lets ``generate``
derive positions from the attention mask, so batched output equals one-at-a-time output; scoring
and training pad on the right, where PEFT's own positions are already right.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oobleck.errors import ArtifactError, ConfigurationError
from oobleck.lm.base import Completion
from oobleck.lm.hf_backend import HuggingFaceLM, _Request

__all__ = ["METHODS", "EncoderClassifierLM", "SoftPromptLM", "SoftPromptState", "weights_sha256"]

logger = logging.getLogger("oobleck.lm.soft_prompt")

METHODS = ("prompt_tuning", "prefix_tuning", "p_tuning", "multitask_prompt_tuning")
"""Prompt-learning methods, each PEFT's own: Lester et al., Li & Liang, Liu et al. (P-tuning), Wang et al. (MPT)."""

_EMBEDDING_METHODS = {"prompt_tuning", "p_tuning", "multitask_prompt_tuning"}  # virtual tokens are input embeddings
_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 over a model folder's weight files (name and bytes, in name order); memoised per file state."""
    folder = Path(path)
    files = sorted(p for p in folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise ConfigurationError(f"no *.safetensors weights in {folder}; soft prompts need a local model folder with safetensors weights")
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, int(stat.st_mtime_ns))
        with _HASH_LOCK:
            known = _HASHES.get(key)
        if known is None:
            one = hashlib.sha256()
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    one.update(block)
            known = one.hexdigest()
            with _HASH_LOCK:
                _HASHES[key] = known
        digest.update(file.name.encode() + b"\0" + known.encode() + b"\n")
    return digest.hexdigest()


def _tensors_digest(tensors: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode() + b"\0" + str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class SoftPromptState:
    """Trained prompt-learning tensors for one predictor, and what they were trained on.

    ``kind`` is ``"causal"`` (virtual tokens or a KV prefix in front of a decoder's prompt) or
    ``"encoder_classifier"`` (an encoder with a classification head over ``labels``).
    ``labels`` are the allowed answers of a classification output (constrained at inference).
    """

    method: str
    config: dict[str, Any]
    tensors: dict[str, Any]
    base_model: str
    base_sha256: str
    kind: str = "causal"
    labels: list[str] | None = None
    task_id: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigurationError(f"unknown soft prompt method {self.method!r}; known: {', '.join(METHODS)}")
        if self.kind not in ("causal", "encoder_classifier"):
            raise ConfigurationError(f"unknown soft prompt kind {self.kind!r}; known: causal, encoder_classifier")

    @property
    def digest(self) -> str:
        """sha256 of the tensors: part of the LM cache key, so a retrained prompt never replays old answers."""
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = _tensors_digest(self.tensors)
            self.__dict__["_digest"] = cached
        return cached

    def peft_config(self) -> Any:
        from peft import get_peft_config

        config = dict(self.config)
        config["inference_mode"] = True  # the saved tensors are the final prompt (P-tuning's encoder output, prefix MLP's KV)
        config["base_model_name_or_path"] = None  # checked by sha256 instead; PEFT would warn that a local path differs from the id
        config.pop("prompt_tuning_init_state_dict_path", None)  # the tensors are already trained
        if "prompt_tuning_init" in config:
            config["prompt_tuning_init"] = "RANDOM"  # no tokenizer or file is needed to rebuild the shapes
            config.pop("tokenizer_name_or_path", None)
        try:
            return get_peft_config(config)
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"the soft prompt's PEFT config is not valid for this peft version: {exc}") from None

    def manifest(self, file: str) -> dict[str, Any]:
        """The program.json entry: everything but the tensors, which live in ``file``."""
        return {"file": file, "method": self.method, "kind": self.kind, "config": self.config, "base_model": self.base_model,
                "base_sha256": self.base_sha256, "labels": self.labels, "task_id": self.task_id, "sha256": self.digest,
                "info": self.info}  # fmt: skip

    def save_tensors(self, path: str | os.PathLike[str]) -> None:
        from safetensors.torch import save_file

        tensors = {name: t.detach().cpu().contiguous() for name, t in self.tensors.items()}
        save_file(tensors, str(path), metadata={"format": "oobleck.soft_prompt", "method": self.method, "base_sha256": self.base_sha256})

    @classmethod
    def from_manifest(cls, entry: dict[str, Any], folder: str | os.PathLike[str]) -> SoftPromptState:
        """Read the tensors an artifact names; a missing, damaged or altered file is an ArtifactError."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(folder) / entry["file"]
        if not path.is_file():
            raise ArtifactError(f"the soft prompt file {path} is missing")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(f"the soft prompt file {path} is not readable safetensors: {exc}") from None
        prompt = cls(entry["method"], dict(entry["config"]), tensors, entry["base_model"], entry["base_sha256"], entry.get("kind", "causal"),
                     entry.get("labels"), entry.get("task_id"), dict(entry.get("info") or {}))  # fmt: skip
        if entry.get("sha256") and entry["sha256"] != prompt.digest:
            raise ArtifactError(f"the soft prompt file {path} does not match the sha256 recorded in program.json; it was changed or damaged")
        return prompt

    def check_base(self, path: str) -> None:
        """Refuse a model whose weights are not the ones this prompt was trained on."""
        actual = weights_sha256(path)
        if actual != self.base_sha256:
            raise ArtifactError(
                f"this soft prompt was trained on {self.base_model!r} (weights sha256 {self.base_sha256[:12]}...) but the LM's "
                f"weights at {path} have sha256 {actual[:12]}...; a soft prompt only works on the exact base model it was trained on"
            )

    def bind(self, lm: Any) -> HuggingFaceLM:
        """An LM that applies this prompt on ``lm``'s model; ``lm`` must be an in-process HF LM of the same weights."""
        if not isinstance(lm, HuggingFaceLM):
            raise ConfigurationError(
                f"a soft prompt runs only on an in-process Hugging Face LM ('hf/...'), not on {type(lm).__name__} {getattr(lm, 'model', '')!r}"
            )
        if isinstance(lm, (SoftPromptLM, EncoderClassifierLM)):
            lm = lm.base
        with _HASH_LOCK:  # one applied LM per base LM: predictors sharing a prompt share its batcher and model
            bound = self.__dict__.setdefault("_bound", {}).get(id(lm))
        if bound is not None and bound.base is lm:
            return bound
        self.check_base(lm.path)
        applied = EncoderClassifierLM(lm, self) if self.kind == "encoder_classifier" else SoftPromptLM(lm, self)
        with _HASH_LOCK:
            bound = self.__dict__["_bound"].setdefault(id(lm), applied)
        return bound if bound.base is lm else applied


def _virtual_tokens(prompt: SoftPromptState) -> int:
    return int(prompt.config.get("num_virtual_tokens") or 0)


def build_peft_model(model: Any, prompt: SoftPromptState) -> Any:
    """``model`` wrapped by PEFT with ``prompt``'s trained tensors loaded, in eval mode."""
    from peft import get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(model, prompt.peft_config())  # the task's own class (causal LM, classifier), not the bare PeftModel
    tensors = {k: v.to(model.device) for k, v in prompt.tensors.items()}
    try:
        result = set_peft_model_state_dict(peft_model, tensors)
    except (RuntimeError, KeyError, ValueError) as exc:  # shapes of another model or method
        raise ArtifactError(f"the soft prompt's tensors do not fit {type(model).__name__}: {exc}") from None
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "modules_to_save" in k]
    if missing:  # a classification head left at random would answer at random
        raise ArtifactError(f"the soft prompt lacks trained tensors for {missing[:3]}; the file is incomplete")
    peft_model.eval()
    return peft_model


class SoftPromptLM(HuggingFaceLM):
    """A causal HF LM with a soft prompt in front of every prompt; shares the base LM's loaded model."""

    def __init__(self, base: HuggingFaceLM, prompt: SoftPromptState, *, cache: Any = None):
        super().__init__(f"hf/{base.model}", device=base.device_name, dtype=base.dtype_name, max_batch_size=base.max_batch_size,
                         batch_wait_ms=base.batch_wait * 1000, cache=base._cache_option if cache is None else cache, adapter=base.adapter, **base.settings)  # fmt: skip
        self.base = base
        self.path = base.path
        self.soft_prompt = prompt
        self._peft: Any = None
        self._model_lock = base._model_lock  # one model, one lock: see HuggingFaceLM

    def cache_identity(self) -> dict[str, Any]:
        return {**self.base.cache_identity(), "soft_prompt": self.soft_prompt.digest}

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "soft_prompt": self.soft_prompt.method}

    def load(self) -> tuple[Any, Any]:
        tokenizer, model = self.base.load()
        with self._load_lock, self._model_lock:
            if self._peft is None:
                self._peft = build_peft_model(model, self.soft_prompt)
        return tokenizer, model

    @property
    def context_length(self) -> int:
        """The base model's context less the virtual tokens in front of every prompt."""
        return self.base.context_length - _virtual_tokens(self.soft_prompt)

    @property
    def peft_model(self) -> Any:
        self.load()
        return self._peft

    def _task_ids(self, rows: int) -> dict[str, Any]:
        if self.soft_prompt.method != "multitask_prompt_tuning":
            return {}
        import torch

        return {"task_ids": torch.full((rows,), int(self.soft_prompt.task_id or 0), dtype=torch.long, device=self._peft.device)}

    def _generate_tokens(self, model: Any, input_ids: Any, attention: Any, kwargs: dict[str, Any]) -> Any:
        import torch

        peft_model = self._peft
        if self.soft_prompt.method not in _EMBEDDING_METHODS:  # a KV prefix: PEFT's generate keeps positions right
            output = peft_model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
            return output[:, input_ids.shape[1] :]
        rows, length = input_ids.shape
        prompt = peft_model.get_prompt(batch_size=1, **self._task_ids(1))[0].to(model.dtype)  # (virtual, hidden)
        virtual = prompt.shape[0]
        embeds = model.get_input_embeddings()(input_ids)
        full = torch.zeros((rows, length + virtual, embeds.shape[-1]), dtype=embeds.dtype, device=embeds.device)
        mask = torch.zeros((rows, length + virtual), dtype=attention.dtype, device=attention.device)
        lengths = attention.sum(dim=1).tolist()
        for row, real in enumerate(lengths):  # [padding][virtual tokens][prompt]
            start = length - int(real)
            full[row, start : start + virtual] = prompt
            full[row, start + virtual :] = embeds[row, start:]
            mask[row, start:] = 1
        return model.generate(inputs_embeds=full, attention_mask=mask, **kwargs)  # new tokens only

    def _forward_logits(self, model: Any, input_ids: Any, attention: Any) -> Any:
        output = self._peft(input_ids=input_ids, attention_mask=attention, **self._task_ids(input_ids.shape[0]))
        return output.logits[:, -input_ids.shape[1] :]  # drop the virtual tokens' positions


class EncoderClassifierLM(HuggingFaceLM):
    """An encoder with a classification head (and a soft prompt) that answers one of its labels.

    It reads the prompt the adapter formats (instructions and inputs) as one text and returns
    the label its head scores highest, as the completion of the adapter's choice for that label.
    """

    def __init__(self, base: HuggingFaceLM, prompt: SoftPromptState, *, cache: Any = None):
        if not prompt.labels:
            raise ArtifactError("an encoder classifier soft prompt needs its labels")
        super().__init__(f"hf/{base.model}", device=base.device_name, dtype=base.dtype_name, max_batch_size=base.max_batch_size,
                         batch_wait_ms=base.batch_wait * 1000, cache=base._cache_option if cache is None else cache, adapter=base.adapter, **base.settings)  # fmt: skip
        self.base = base
        self.path = base.path
        self.soft_prompt = prompt

    def cache_identity(self) -> dict[str, Any]:
        return {**self.base.cache_identity(), "soft_prompt": self.soft_prompt.digest}

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "soft_prompt": self.soft_prompt.method}

    def _load(self) -> tuple[Any, Any]:
        tokenizer, model = load_encoder_classifier(self.path, len(self.soft_prompt.labels or []), self.device_name)
        return tokenizer, build_peft_model(model, self.soft_prompt)

    @property
    def context_length(self) -> int:
        _, model = self.load()
        return int(getattr(model.config, "max_position_embeddings", 512)) - _virtual_tokens(self.soft_prompt)

    def prompt_ids(self, messages: list[Any]) -> list[int]:
        """The prompt as one text, cut to fit beside the virtual tokens: a classifier reads what fits."""
        tokenizer, _ = self.load()
        text = "\n".join(m["content"] for m in messages)
        return list(tokenizer(text, add_special_tokens=True, truncation=True, max_length=self.context_length - 1)["input_ids"])

    def _run_batch(self, group: list[_Request]) -> list[list[Completion]]:
        import torch

        tokenizer, model = self.load()
        longest = max(len(r.prompt_ids) for r in group)
        input_ids = torch.full((len(group), longest), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(group), longest), dtype=torch.long)
        for row, request in enumerate(group):  # encoders pad on the right
            input_ids[row, : len(request.prompt_ids)] = torch.tensor(request.prompt_ids)
            attention[row, : len(request.prompt_ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
        self.batches_run += 1
        labels = list(self.soft_prompt.labels or [])
        results = []
        for row, request in enumerate(group):
            best = int(logits[row].argmax())
            choices = request.settings.get("choices")
            text = choices[best] if isinstance(choices, (list, tuple)) and len(choices) == len(labels) else " " + labels[best]
            results.append([Completion(text, len(request.prompt_ids), 1)] * int(request.settings.get("n") or 1))
        return results


def load_encoder_classifier(path: str, num_labels: int, device: str | None = None) -> tuple[Any, Any]:
    """Tokenizer and ``AutoModelForSequenceClassification`` of a local encoder (a fresh head of ``num_labels``)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    local = os.path.isdir(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised classifier" is the point here, not a warning
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load an encoder classifier from {path}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return tokenizer, model


def describe_config(config: Any) -> dict[str, Any]:
    """A PEFT config as JSON-ready data (enums as their values), for program.json."""
    data = config.to_dict()
    return json.loads(json.dumps(data, default=lambda v: getattr(v, "value", str(v))))
