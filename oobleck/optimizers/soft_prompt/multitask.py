"""Multi-task prompt tuning (Wang et al.): one prompt shared over source tasks, then adapted to a target.

Source training learns PEFT's shared prompt and a low-rank task factor per source task on the
mixture of the tasks' labelled examples; ``SoftPrompt(method="multitask_prompt_tuning",
source=...)`` then starts the target task's prompt from the source tasks' average.
"""

from __future__ import annotations

from collections.abc import Sequence

from oobleck.errors import ConfigurationError
from oobleck.example import Example
from oobleck.lm.hf_backend import HuggingFaceLM
from oobleck.lm.soft_prompt import SoftPromptState
from oobleck.modules.predict import Predict
from oobleck.optimizers.base import check_trainset
from oobleck.optimizers.soft_prompt.methods import MethodSettings
from oobleck.optimizers.soft_prompt.optimizer import _base_lm, build_records
from oobleck.optimizers.soft_prompt.trainer import SoftPromptTrainer

__all__ = ["train_multitask_source"]


def train_multitask_source(tasks: Sequence[tuple[Predict, Sequence[Example]]], *, num_virtual_tokens: int = 16, num_ranks: int = 1,
                           steps: int = 300, batch_size: int = 16, lr: float | None = None, init_text: str | None = None, seed: int = 0,
                           display_progress: bool = False) -> SoftPromptState:  # fmt: skip
    """Train the shared source prompt over ``tasks`` (a predictor and its labelled examples each), all on one in-process LM."""
    if len(tasks) < 2:
        raise ConfigurationError("multi-task source training needs at least two tasks")
    lms = {id(_base_lm(p)): _base_lm(p) for p, _ in tasks}
    lm = next(iter(lms.values()))
    if len(lms) != 1 or not isinstance(lm, HuggingFaceLM):
        raise ConfigurationError("every source task's predictor must run on the same in-process Hugging Face LM ('hf/...')")
    records = []
    for task_id, (predictor, examples) in enumerate(tasks):
        records += build_records(predictor, lm, check_trainset(examples, f"task {task_id} examples"), [], [], None, task_id)
    settings = MethodSettings("multitask_prompt_tuning", num_virtual_tokens, num_tasks=len(tasks), num_ranks=num_ranks)
    trainer = SoftPromptTrainer(lm, settings, labels=None, choices=None, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                eval_every=max(1, steps // 10), patience=0, display_progress=display_progress)  # fmt: skip
    run = trainer.fit(records, None, init_text=init_text)
    run.state.info.update({"source_tasks": len(tasks), "records": len(records)})
    return run.state
