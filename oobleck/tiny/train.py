"""Train oobleck-tiny from a seed: ``python -m oobleck.tiny.train --out DIR``.

Everything is reproducible from the seed: the prompts (rendered by oobleck's compact adapter
through the model's own chat template), the initial weights and the batch order. The loss
covers only output spans (every demo's output and the final answer, with its end token), so
the model learns to read instructions and demos rather than to predict inputs. Checkpoints are
safetensors plus JSON (no pickle), and ``--resume`` continues from the last one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oobleck.tiny.tasks import Sample, make_induction_sample, make_sample, render_prompt

logger = logging.getLogger("oobleck.tiny.train")

SPECIALS = ["<pad>", "<eos>", "<unk>"]
CHARS = string.ascii_lowercase + string.ascii_uppercase + string.digits + " \n.,:;!?'\"`-+*/=()[]{}_|<>#&%$@~^"
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\\n' }}"
    "{% elif m['role'] == 'user' %}{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)
MAX_LEN = 256


@dataclass
class TrainConfig:
    out: Path
    tokens: int = 10_000_000
    seed: int = 0
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.03
    final_lr_ratio: float = 0.05
    clip: float = 1.0
    induction_rate: float = 0.08
    checkpoint_every: int = 250
    resume: bool = False
    eval_examples: int = 100
    init_from: Path | None = None  # warm start: continue from a trained model folder


def vocabulary() -> dict[str, int]:
    return {tok: i for i, tok in enumerate([*SPECIALS, *CHARS])}


def build_tokenizer() -> Any:
    """A character-level fast tokenizer that ``AutoTokenizer`` loads from ``tokenizer.json``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocabulary(), unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    tokenizer.model_max_length = MAX_LEN
    return tokenizer


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Save with the portable class name, so transformers 4.x loads it as well as 5.x."""
    tokenizer.save_pretrained(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def model_config(vocab_size: int) -> Any:
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=6,
        max_position_embeddings=MAX_LEN,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    # Read by oobleck's HF backend: this model was trained on the compact adapter's format.
    config.oobleck = {"adapter": "compact", "name": "oobleck-tiny"}
    return config


def prompt_text(sample: Sample, separator: str) -> str:
    """The exact text the chat template renders for the compact adapter's messages."""
    messages = render_prompt(sample, separator)
    return messages[0]["content"] + "\n" + messages[1]["content"]


def encode(sample: Sample, separator: str, vocab: dict[str, int]) -> tuple[list[int], list[int]] | None:
    """Token ids and loss mask (1 on demo outputs and the final answer plus its end token)."""
    prompt = prompt_text(sample, separator)
    text = prompt + " " + sample.answer
    unk = vocab["<unk>"]
    ids = [vocab.get(ch, unk) for ch in text] + [vocab["<eos>"]]
    if len(ids) > MAX_LEN:
        return None
    mask = [0] * len(ids)
    out_label = next(iter(sample.signature.output_fields.values())).label
    cursor = len(sample.signature.instructions)
    for demo in sample.demos:
        needle = f"\n{out_label}: {demo[out_label]}"
        at = prompt.find(needle, cursor)
        if at < 0:
            raise AssertionError(f"demo output not found in prompt: {needle!r}")
        start = at + len(out_label) + 2  # the space before the value is part of the output
        for i in range(start, at + len(needle)):
            mask[i] = 1
        cursor = at + len(needle)
    for i in range(len(prompt), len(ids)):
        mask[i] = 1
    return ids, mask


def draw(rng: random.Random, induction_rate: float) -> Sample:
    if rng.random() < induction_rate:
        return make_induction_sample(rng)
    return make_sample(rng)


def build_dataset(config: TrainConfig) -> list[tuple[list[int], list[int]]]:
    """Samples until the token budget is met; over-long prompts lose demos until they fit."""
    rng = random.Random(config.seed)
    vocab = vocabulary()
    data: list[tuple[list[int], list[int]]] = []
    total = 0
    while total < config.tokens:
        sample = draw(rng, config.induction_rate)
        separator = "\n\n" if rng.random() < 0.3 else "\n"
        encoded = encode(sample, separator, vocab)
        while encoded is None and sample.demos:
            sample.demos.pop()
            encoded = encode(sample, separator, vocab)
        if encoded is None:
            continue
        data.append(encoded)
        total += len(encoded[0])
    return data


def batches(data: list[tuple[list[int], list[int]]], batch_size: int, seed: int) -> list[list[int]]:
    """Index batches grouped by length (little padding), in a seeded random order."""
    rng = random.Random(seed + 1)
    order = list(range(len(data)))
    rng.shuffle(order)
    chunk = batch_size * 64
    result = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: len(data[i][0]))
        result += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(result)
    return result


def collate(data: list[tuple[list[int], list[int]]], index: list[int]) -> tuple[Any, Any, Any]:
    import torch

    longest = max(len(data[i][0]) for i in index)
    ids = torch.zeros((len(index), longest), dtype=torch.long)
    attention = torch.zeros((len(index), longest), dtype=torch.long)
    labels = torch.full((len(index), longest), -100, dtype=torch.long)
    for row, i in enumerate(index):
        tokens, mask = data[i]
        n = len(tokens)
        ids[row, :n] = torch.tensor(tokens)
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor([t if m else -100 for t, m in zip(tokens, mask, strict=True)])
    return ids, attention, labels


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    warmup = max(1, int(total * config.warmup))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = config.lr * config.final_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _save_checkpoint(path: Path, model: Any, optimizer: Any, step: int) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Any] = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"optim.{names[id(param)]}.{key}"] = state[key].contiguous()
    tmp = path / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, path / "checkpoint.safetensors")
    meta_tmp = path / "checkpoint.json.tmp"
    meta_tmp.write_text(json.dumps({"step": step}))
    os.replace(meta_tmp, path / "checkpoint.json")


def _load_checkpoint(path: Path, model: Any, optimizer: Any) -> int:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path / "checkpoint.safetensors"))
    step = json.loads((path / "checkpoint.json").read_text())["step"]
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    model.tie_weights()
    for name, param in model.named_parameters():
        if f"optim.{name}.exp_avg" in tensors:
            optimizer.state[param] = {
                "step": torch.tensor(float(step)),
                "exp_avg": tensors[f"optim.{name}.exp_avg"],
                "exp_avg_sq": tensors[f"optim.{name}.exp_avg_sq"],
            }
    return step


def _earlier_stages(init_from: Path | None) -> list[dict[str, Any]]:
    """The training records of the model a warm start continues, oldest first, so one file tells the whole recipe."""
    record = None if init_from is None else init_from / "training.json"
    if record is None or not record.exists():
        return []
    earlier = json.loads(record.read_text())
    stages = earlier.pop("earlier_stages", [])
    earlier.pop("accuracy", None)
    return [*stages, earlier]


def train(config: TrainConfig) -> dict[str, Any]:
    """Train and save the model to ``config.out``; returns the evaluation table."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(config.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    data = build_dataset(config)
    plan = batches(data, config.batch_size, config.seed)
    tokens = sum(len(d[0]) for d in data)
    logger.info("%d samples, %d tokens, %d steps", len(data), tokens, len(plan))
    tokenizer = build_tokenizer()
    if config.init_from is not None:
        model = LlamaForCausalLM.from_pretrained(config.init_from)
        logger.info("warm start from %s", config.init_from)
    else:
        model = LlamaForCausalLM(model_config(len(tokenizer)))
    logger.info("%.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    ckpt_dir = config.out / "checkpoint"
    start_step = 0
    if config.resume and (ckpt_dir / "checkpoint.json").exists():
        start_step = _load_checkpoint(ckpt_dir, model, optimizer)
        logger.info("resumed at step %d", start_step)
    model.train()
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    seen = 0
    losses: list[float] = []
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"), TimeRemainingColumn()) as bar:
        task = bar.add_task("train", total=len(plan), completed=start_step, loss=float("nan"))
        for step in range(start_step, len(plan)):
            ids, attention, labels = collate(data, plan[step])
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, len(plan), config)
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            seen += int(attention.sum())
            losses.append(loss.item())
            bar.update(task, advance=1, loss=losses[-1])
            if step % 100 == 0:
                logger.info("step %d/%d loss %.4f", step, len(plan), losses[-1])
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < len(plan):
                _save_checkpoint(ckpt_dir, model, optimizer, step + 1)
    elapsed = time.time() - started
    model.eval()
    config.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.out)
    save_tokenizer(tokenizer, config.out)
    table = evaluate(config.out, n=config.eval_examples, seed=config.seed + 1000) if config.eval_examples else {}
    window = max(1, min(20, len(losses) // 4))
    report = {
        "tokens": tokens, "steps": len(plan), "seconds": round(elapsed, 1), "tokens_per_second": round(seen / max(elapsed, 1e-9)),
        "loss_first": sum(losses[:window]) / window if losses else None,
        "loss_last": sum(losses[-window:]) / window if losses else None,
        "settings": {"seed": config.seed, "lr": config.lr, "batch_size": config.batch_size, "token_budget": config.tokens,
                     "init_from": None if config.init_from is None else config.init_from.name, "eval_seed": config.seed + 1000},
        "earlier_stages": _earlier_stages(config.init_from),
        "accuracy": table,
    }  # fmt: skip
    (config.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    if ckpt_dir.exists():
        for f in ckpt_dir.iterdir():
            f.unlink()
        ckpt_dir.rmdir()
    return report


def greedy_answers(model_dir: Path, samples: list[Sample], batch_size: int = 64, max_new_tokens: int = 24) -> list[str]:
    """Greedy completions straight from transformers (independent of oobleck's LM layer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    answers = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        texts = [tokenizer.apply_chat_template(render_prompt(s), tokenize=False, add_generation_prompt=True) for s in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=1)
        for row in out[:, batch["input_ids"].shape[1] :]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


CONDITIONS = [("precise", 0), ("vague", 0), ("vague", 3)]


def evaluate(model_dir: Path, n: int = 100, seed: int = 1000) -> dict[str, dict[str, float]]:
    """Held-out exact-match accuracy per task and condition (canonical field names)."""
    from oobleck.tiny.tasks import TASKS

    rng = random.Random(seed)
    table: dict[str, dict[str, float]] = {}
    for name, task in TASKS.items():
        row = {}
        for condition, demos in CONDITIONS:
            if task.demos_only and (condition == "precise" or demos == 0):
                continue
            samples = [make_sample(rng, task_name=name, condition=condition, n_demos=demos, alt_rate=0.0) for _ in range(n)]
            answers = greedy_answers(model_dir, samples)
            row[f"{condition}/{demos}"] = sum(a == s.answer for a, s in zip(answers, samples, strict=True)) / n
        table[name] = row
    samples = [make_induction_sample(rng) for _ in range(n)]
    answers = greedy_answers(model_dir, samples, max_new_tokens=48)
    table["induction"] = {"exact": sum(a == s.answer for a, s in zip(answers, samples, strict=True)) / n}
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    columns = ["precise/0", "vague/0", "vague/3", "exact"]
    used = [c for c in columns if any(c in row for row in table.values())]
    lines = ["| task | " + " | ".join(used) + " |", "|---|" + "---|" * len(used)]
    for name, row in table.items():
        cells = [f"{row[c] * 100:.0f}%" if c in row else "-" for c in used]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the trained model")
    parser.add_argument("--tokens", type=int, default=TrainConfig.tokens, help="training token budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate")
    parser.add_argument("--init-from", type=Path, default=None, help="continue from this trained model folder (a second stage)")
    parser.add_argument("--eval-examples", type=int, default=100, help="held-out prompts per cell of the table")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--eval-only", action="store_true", help="only print the accuracy table of --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.eval_only:
        print(format_table(evaluate(args.out, n=args.eval_examples)))
        return
    config = TrainConfig(out=args.out, tokens=args.tokens, seed=args.seed, resume=args.resume, eval_examples=args.eval_examples,
                         batch_size=args.batch_size, lr=args.lr, init_from=args.init_from)  # fmt: skip
    report = train(config)
    print(json.dumps({k: v for k, v in report.items() if k != "accuracy"}))
    print(format_table(report["accuracy"]))


if __name__ == "__main__":
    main()
