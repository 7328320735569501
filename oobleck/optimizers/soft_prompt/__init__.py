"""Soft prompts: the gradient fallback for predictors on in-process Hugging Face models."""

from oobleck.optimizers.soft_prompt.optimizer import SoftPrompt, build_records, soft_prompt_eligibility

__all__ = ["SoftPrompt", "build_records", "soft_prompt_eligibility"]
