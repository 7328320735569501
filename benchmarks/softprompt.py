"""Soft prompts, measured: training speed, text vs random init, encoders, multi-task transfer.

Sections (all offline, on the bundled demo model or the bundled MiniLM encoder):

- ``speed``: steps/s and tokens/s of oobleck's training loop against a plain PEFT + transformers
  loop (the usual recipe: tokenizer padding, labels masked to the answer, AdamW) on the same
  model, data, batch size and method, interleaved runs in one process. On CUDA, both in bf16.
- ``curves``: a vague program with no demos on the demo model (first_letter); prompt tuning
  started from the best discrete instruction vs from random vectors: dev curves, held-out score,
  and the vague zero-shot score. Writes ``softprompt_curves.png``.
- ``encoder``: a sentiment task on MiniLM with a classification head: prompt tuning vs P-tuning
  vs training the head alone, held-out accuracy.
- ``multitask``: a shared prompt trained on reverse/repeat/uppercase, then adapted to
  first_letter, against first_letter trained from scratch with the same steps.

    python benchmarks/softprompt.py [--sections speed,curves,encoder,multitask] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any, Literal

from _common import RESULTS, console, write_result
from rich.table import Table

import oobleck as ob
from oobleck.optimizers.soft_prompt import SoftPrompt, build_records
from oobleck.optimizers.soft_prompt.methods import MethodSettings
from oobleck.optimizers.soft_prompt.trainer import HEAD_LR, SoftPromptTrainer, machine_threads
from oobleck.tiny.tasks import task_examples

VAGUE = "Answer the question."


def _examples(task: str, n: int, seed: int, **fixed: str) -> list[ob.Example]:
    rows = task_examples(task, n, seed, **fixed)
    inputs = [k for k in rows[0] if k not in ("answer", "sentiment", "label")]
    return [ob.Example(**r).with_inputs(*inputs) for r in rows]


def _program(lm: ob.BaseLM) -> ob.Predict:
    return ob.Predict(ob.make_signature("word -> answer").with_instructions(VAGUE), lm=lm)


# -- speed ---------------------------------------------------------------------------------------


def _plain_peft_loop(lm: Any, records: list[Any], steps: int, batch_size: int, lr: float, device: str) -> dict[str, float]:
    """The usual recipe with PEFT and transformers, written the way their docs show it."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(lm.path)
    tokenizer.padding_side = "right"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(lm.path, dtype=dtype).to(device)
    config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=16, prompt_tuning_init=peft.PromptTuningInit.TEXT,
                                     prompt_tuning_init_text=VAGUE, tokenizer_name_or_path=lm.path)  # fmt: skip
    model = peft.get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    prompts = [tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in records]
    targets = [r.target + tokenizer.eos_token for r in records]
    model.train()
    tokens = 0
    start = time.perf_counter()
    for step in range(steps):
        picked = random.Random(step).sample(range(len(records)), batch_size)
        full = [prompts[i] + targets[i] for i in picked]
        batch = tokenizer(full, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        labels = batch["input_ids"].clone()
        for row, i in enumerate(picked):
            prompt_length = len(tokenizer(prompts[i], add_special_tokens=False)["input_ids"])
            labels[row, :prompt_length] = -100
        labels[batch["attention_mask"] == 0] = -100
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(batch["attention_mask"].sum())
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"steps_per_s": steps / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds}


def _ours(lm: Any, records: list[Any], steps: int, batch_size: int, lr: float) -> dict[str, float]:
    trainer = SoftPromptTrainer(lm, MethodSettings("prompt_tuning", 16), labels=None, choices=None, steps=steps, batch_size=batch_size,
                                lr=lr, eval_every=steps + 1, patience=0, display_progress=False)  # fmt: skip
    run = trainer.fit(records, None, init_text=VAGUE)
    return {"steps_per_s": run.steps / run.seconds, "tokens_per_s": run.tokens / run.seconds, "seconds": run.seconds}


def speed(device: str, steps: int, rounds: int) -> dict[str, Any]:
    lm = ob.LM("hf/oobleck-tiny", cache=False, device=device)
    records = build_records(_program(lm), lm, _examples("first_letter", 200, 1), [], [], None)
    batch_size, lr = 16, 3e-2
    _ours(lm, records, 3, batch_size, lr)  # warm both paths up (model load, kernels)
    _plain_peft_loop(lm, records, 3, batch_size, lr, device)
    rows: dict[str, list[dict[str, float]]] = {"oobleck": [], "plain PEFT loop": []}
    for _ in range(rounds):  # interleaved, so drift on a noisy machine hits both
        rows["oobleck"].append(_ours(lm, records, steps, batch_size, lr))
        rows["plain PEFT loop"].append(_plain_peft_loop(lm, records, steps, batch_size, lr, device))
    summary = {}
    for name, runs in rows.items():
        summary[name] = {key: sorted(r[key] for r in runs)[len(runs) // 2] for key in runs[0]}
    ratio = summary["oobleck"]["steps_per_s"] / summary["plain PEFT loop"]["steps_per_s"]
    table = Table(title=f"soft prompt training speed, demo model, prompt tuning, batch {batch_size}, {steps} steps, {device}")
    for column in ("loop", "steps/s", "tokens/s", "seconds"):
        table.add_column(column)
    for name, values in summary.items():
        table.add_row(name, f"{values['steps_per_s']:.1f}", f"{values['tokens_per_s']:.0f}", f"{values['seconds']:.1f}")
    console.print(table)
    console.print(f"oobleck / plain: {ratio:.2f}x steps/s (median of {rounds} interleaved rounds)")
    return {"device": device, "steps": steps, "rounds": rounds, "summary": summary, "runs": rows, "ratio_steps_per_s": ratio}


# -- curves --------------------------------------------------------------------------------------


def curves(steps: int, seed: int) -> dict[str, Any]:
    lm = ob.LM("hf/oobleck-tiny", cache=False)
    data = _examples("first_letter", 400, seed)
    train, dev, test = data[:150], data[150:210], data[210:]
    evaluate = ob.Evaluate(devset=test, metric="exact_match", num_threads=16, display_progress=False)
    zero_shot = evaluate(_program(lm)).score
    best_discrete = "Give the first letter of the word."  # what Bayesian search finds on this task (see demo_optimizers)
    precise = ob.Predict(ob.make_signature("word -> answer").with_instructions(best_discrete), lm=lm)
    results: dict[str, Any] = {"zero_shot_vague": zero_shot, "zero_shot_best_discrete": evaluate(precise).score, "runs": {}}
    # The program keeps its vague instruction in every run; only where the soft prompt starts differs.
    for label, init, text in [("init from the best discrete instruction", "instruction", best_discrete),
                              ("init from the vague instruction", "instruction", None), ("random init", "random", None)]:  # fmt: skip
        started = time.perf_counter()
        optimizer = SoftPrompt("exact_match", steps=steps, eval_every=5, patience=0, init=init, init_text=text, num_virtual_tokens=16,
                               seed=seed, use_traces=False, display_progress=False)  # fmt: skip
        compiled = optimizer.compile(_program(lm), trainset=train, valset=dev)
        seconds = time.perf_counter() - started
        held_out = evaluate(compiled).score
        history = optimizer.runs[0]["history"]
        results["runs"][label] = {"held_out": held_out, "seconds": seconds, "history": history,
                                  "first_step_at_0.8": next((h["step"] for h in history if h["dev"] >= 0.8), None)}  # fmt: skip
    table = Table(title=f"demo model, first_letter, soft prompt from a vague program ({steps} steps max, 2-core CPU)")
    for column in ("run", "held-out", "train s", "dev at steps 0/5/10/15/20", "first step dev>=0.8"):
        table.add_column(column)
    table.add_row("vague zero-shot (no soft prompt)", f"{zero_shot:.1%}", "-", "-", "-")
    table.add_row("best discrete instruction, zero-shot (text)", f"{results['zero_shot_best_discrete']:.1%}", "-", "-", "-")
    for label, run in results["runs"].items():
        points = "/".join(f"{h['dev']:.2f}" for h in run["history"][:5])
        table.add_row(label, f"{run['held_out']:.1%}", f"{run['seconds']:.0f}", points, str(run["first_step_at_0.8"]))
    console.print(table)
    _plot(results)
    return results


def _plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for label, run in results["runs"].items():
        axis.plot([h["step"] for h in run["history"]], [h["dev"] for h in run["history"]], marker="o", label=label)
    axis.axhline(results["zero_shot_vague"], color="grey", linestyle="--", label="vague zero-shot")
    axis.set_xlabel("training step")
    axis.set_ylabel("dev exact match")
    axis.set_title("Soft prompt on the demo model: text vs random init")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(RESULTS / "softprompt_curves.png", dpi=120)


# -- encoder -------------------------------------------------------------------------------------


class Review(ob.Signature):
    """Is the review positive or negative?"""

    review: str = ob.InputField()
    sentiment: Literal["positive", "negative"] = ob.OutputField()


def _head_only(lm: Any, train: list[ob.Example], test: list[ob.Example], steps: int, lr: float, seed: int) -> float:
    """The baseline: the encoder frozen, only a fresh classification head trained (same steps and batches)."""
    import torch

    from oobleck.lm.soft_prompt import load_encoder_classifier

    torch.manual_seed(seed)
    tokenizer, model = load_encoder_classifier(lm.path, 2)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("classifier")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    adapter = ob.ChatAdapter()
    texts = lambda rows: ["\n".join(m["content"] for m in adapter.format(Review, [], {"review": e.review})) for e in rows]
    labels = ["positive", "negative"]
    model.train()
    train_texts = texts(train)
    for step in range(steps):
        picked = random.Random(seed * 1_000_003 + step).sample(range(len(train)), 8)
        batch = tokenizer([train_texts[i] for i in picked], return_tensors="pt", padding=True)
        target = torch.tensor([labels.index(train[i].sentiment) for i in picked])
        loss = model(**batch, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts(test), return_tensors="pt", padding=True)).logits
    predicted = [labels[int(i)] for i in logits.argmax(-1)]
    return sum(p == e.sentiment for p, e in zip(predicted, test, strict=True)) / len(test)


def encoder(steps: int, seed: int) -> dict[str, Any]:
    lm = ob.LM("hf/minilm", cache=False)
    data = _examples("sentiment", 400, seed, pos="positive", neg="negative")
    train, dev, test = data[:200], data[200:260], data[260:]
    evaluate = ob.Evaluate(devset=test, metric="exact_match", num_threads=8, display_progress=False)
    results: dict[str, Any] = {}
    for label, method, lr in [("prompt tuning (+ head)", "prompt_tuning", 3e-2), ("P-tuning, MLP (+ head)", "p_tuning", 3e-3)]:
        started = time.perf_counter()
        optimizer = SoftPrompt("exact_match", method=method, steps=steps, eval_every=max(10, steps // 6), patience=0, lr=lr, batch_size=8,
                               seed=seed, display_progress=False)  # fmt: skip
        compiled = optimizer.compile(ob.Predict(Review, lm=lm), trainset=train, valset=dev)
        results[label] = {"held_out": evaluate(compiled).score, "seconds": time.perf_counter() - started}
    started = time.perf_counter()
    results["head only (encoder frozen)"] = {"held_out": _head_only(lm, train, test, steps, HEAD_LR, seed), "seconds": time.perf_counter() - started}
    table = Table(title=f"MiniLM encoder + classification head, generated sentiment task, {steps} steps of batch 8, held-out n={len(test)}")
    for column in ("method", "held-out accuracy", "seconds"):
        table.add_column(column)
    for label, values in results.items():
        table.add_row(label, f"{values['held_out']:.1%}", f"{values['seconds']:.0f}")
    console.print(table)
    return results


# -- multitask -----------------------------------------------------------------------------------


def multitask(steps: int, seed: int) -> dict[str, Any]:
    lm = ob.LM("hf/oobleck-tiny", cache=False)
    sources = [(_program(lm), _examples(task, 150, seed + i)) for i, task in enumerate(("reverse", "repeat", "uppercase"))]
    started = time.perf_counter()
    source = ob.optimizers.train_multitask_source(sources, num_virtual_tokens=16, steps=3 * steps, batch_size=16, seed=seed, init_text=VAGUE)
    source_seconds = time.perf_counter() - started
    data = _examples("first_letter", 360, seed + 10)
    train, dev, test = data[:100], data[100:160], data[160:]
    evaluate = ob.Evaluate(devset=test, metric="exact_match", num_threads=16, display_progress=False)
    results: dict[str, Any] = {"source_seconds": source_seconds, "runs": {}}
    for label, kwargs in [("adapted from the 3-task source prompt", {"source": source}), ("from scratch (random init)", {"init": "random"})]:
        optimizer = SoftPrompt("exact_match", method="multitask_prompt_tuning", steps=steps, eval_every=max(5, steps // 6), patience=0,
                               num_virtual_tokens=16, seed=seed, use_traces=False, display_progress=False, **kwargs)  # fmt: skip
        compiled = optimizer.compile(_program(lm), trainset=train, valset=dev)
        results["runs"][label] = {"held_out": evaluate(compiled).score, "history": optimizer.runs[0]["history"]}
    table = Table(title=f"multi-task prompt tuning: first_letter after {steps} target steps (source: {3 * steps} steps on 3 other tasks)")
    for column in ("target training", "held-out", "dev curve"):
        table.add_column(column)
    for label, run in results["runs"].items():
        table.add_row(label, f"{run['held_out']:.1%}", " ".join(f"{h['dev']:.2f}" for h in run["history"]))
    console.print(table)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="speed,curves,encoder,multitask")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (curves, encoder, multitask)")
    parser.add_argument("--speed-steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console.print(f"torch threads: {machine_threads()}")
    payload: dict[str, Any] = {}
    sections = args.sections.split(",")
    if "speed" in sections:
        payload["speed"] = speed(args.device, args.speed_steps, args.rounds)
    if "curves" in sections:
        payload["curves"] = curves(args.steps, args.seed)
    if "encoder" in sections:
        payload["encoder"] = encoder(args.steps, args.seed)
    if "multitask" in sections:
        payload["multitask"] = multitask(args.steps, args.seed)
    write_result(f"softprompt-{args.device}" if args.sections == parser.get_default("sections") else f"softprompt-{args.device}-{'-'.join(sections)}", payload)


if __name__ == "__main__":
    main()
