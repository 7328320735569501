"""The four prompt-learning methods, as PEFT configs, and their initialisation from text.

PEFT implements every method; this module only chooses each one's config from oobleck's
settings and, for the bridge from discrete search, starts the soft prompt from the best
instruction: PEFT's TEXT init for prompt tuning (and multi-task prompt tuning), the model's own
key/value cache of the text for prefix tuning without the reparameterisation MLP, and the
text's token embeddings as the input of P-tuning's prompt encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from oobleck.errors import ConfigurationError
from oobleck.lm.soft_prompt import METHODS

__all__ = ["DEFAULT_LR", "MethodSettings", "init_from_text", "make_config"]

logger = logging.getLogger("oobleck.optimizers.soft_prompt")

DEFAULT_LR = {"prompt_tuning": 3e-2, "prefix_tuning": 1e-2, "p_tuning": 3e-3, "multitask_prompt_tuning": 3e-2}
"""Learning rates that train the demo model and MiniLM well; prompt tuning wants large ones (Lester et al. used 0.3)."""


@dataclass
class MethodSettings:
    """What shapes a method's config; ``encoder`` and ``reparameterize`` apply to P-tuning and prefix tuning."""

    method: str = "prompt_tuning"
    num_virtual_tokens: int = 16
    reparameterize: bool = True  # prefix tuning: the MLP of Li & Liang over a smaller embedding
    encoder: str = "mlp"  # P-tuning's prompt encoder: "mlp" or "lstm"
    encoder_hidden_size: int | None = None
    num_tasks: int = 1  # multi-task prompt tuning: tasks the shared prompt is trained over
    num_ranks: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigurationError(f"unknown soft prompt method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.encoder not in ("mlp", "lstm"):
            raise ConfigurationError(f"P-tuning's encoder is 'mlp' or 'lstm', not {self.encoder!r}")
        if self.num_virtual_tokens < 1:
            raise ConfigurationError("num_virtual_tokens must be at least 1")


def make_config(settings: MethodSettings, *, task_type: str, model: Any, init_text: str | None, tokenizer_path: str | None,
                source_path: str | None = None, source_task: int | None = None) -> Any:  # fmt: skip
    """The PEFT config for ``settings`` on ``model``; ``source_path`` starts multi-task prompt tuning from source tasks."""
    import peft

    hidden = int(getattr(model.config, "hidden_size", 0) or 0)
    common: dict[str, Any] = {"task_type": task_type, "num_virtual_tokens": settings.num_virtual_tokens}
    method = settings.method
    if method == "prompt_tuning":
        if init_text:
            return peft.PromptTuningConfig(**common, prompt_tuning_init=peft.PromptTuningInit.TEXT, prompt_tuning_init_text=init_text,
                                           tokenizer_name_or_path=tokenizer_path)  # fmt: skip
        return peft.PromptTuningConfig(**common, prompt_tuning_init=peft.PromptTuningInit.RANDOM)
    if method == "prefix_tuning":
        return peft.PrefixTuningConfig(**common, prefix_projection=settings.reparameterize,
                                       encoder_hidden_size=settings.encoder_hidden_size or hidden)  # fmt: skip
    if method == "p_tuning":
        kind = peft.PromptEncoderReparameterizationType.LSTM if settings.encoder == "lstm" else peft.PromptEncoderReparameterizationType.MLP
        return peft.PromptEncoderConfig(**common, encoder_reparameterization_type=kind, encoder_hidden_size=settings.encoder_hidden_size or hidden)
    init = peft.MultitaskPromptTuningInit
    if source_path:
        choice = init.EXACT_SOURCE_TASK if source_task is not None else init.AVERAGE_SOURCE_TASKS
        return peft.MultitaskPromptTuningConfig(**common, num_tasks=1, num_ranks=settings.num_ranks, prompt_tuning_init=choice,
                                                prompt_tuning_init_state_dict_path=source_path, prompt_tuning_init_task=source_task or 0)  # fmt: skip
    if init_text:
        return peft.MultitaskPromptTuningConfig(**common, num_tasks=settings.num_tasks, num_ranks=settings.num_ranks, prompt_tuning_init=init.TEXT,
                                                prompt_tuning_init_text=init_text, tokenizer_name_or_path=tokenizer_path)  # fmt: skip
    return peft.MultitaskPromptTuningConfig(**common, num_tasks=settings.num_tasks, num_ranks=settings.num_ranks, prompt_tuning_init=init.RANDOM)


def init_from_text(peft_model: Any, model: Any, tokenizer: Any, settings: MethodSettings, text: str) -> bool:
    """Start prefix tuning or P-tuning from ``text`` (PEFT's TEXT init covers the other two); True when done."""
    import torch

    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        return False
    n = settings.num_virtual_tokens
    ids = (ids * (n // len(ids) + 1))[:n]  # repeat or cut the text to the prompt's length, as PEFT's TEXT init does
    encoder = next(iter(peft_model.prompt_encoder.values()))
    with torch.no_grad():
        if settings.method == "p_tuning":
            weight = model.get_input_embeddings()(torch.tensor(ids, device=model.device))
            encoder.embedding.weight.copy_(weight.to(encoder.embedding.weight.dtype))
            return True
        if settings.method == "prefix_tuning" and not settings.reparameterize:
            output = model(input_ids=torch.tensor([ids], device=model.device), use_cache=True)
            cache = output.past_key_values
            layers = []
            for layer in range(len(cache.layers) if hasattr(cache, "layers") else len(cache)):
                key, value = (cache.layers[layer].keys, cache.layers[layer].values) if hasattr(cache, "layers") else cache[layer]
                # (1, heads, n, head_dim) -> (n, heads * head_dim), in PEFT's [layer][key, value][head][dim] order
                layers.append(key[0].permute(1, 0, 2).reshape(n, -1))
                layers.append(value[0].permute(1, 0, 2).reshape(n, -1))
            flat = torch.cat(layers, dim=1)
            if flat.shape != encoder.embedding.weight.shape:
                logger.warning("prefix init from text skipped: the KV cache has shape %s, the prefix %s", tuple(flat.shape),
                               tuple(encoder.embedding.weight.shape))  # fmt: skip
                return False
            encoder.embedding.weight.copy_(flat.to(encoder.embedding.weight.dtype))
            return True
    logger.info("%s with the reparameterisation MLP has no text initialisation; it starts at random", settings.method)
    return False
