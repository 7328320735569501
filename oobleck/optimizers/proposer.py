"""``InstructionProposer``: instruction candidates per predictor, written by a prompt LM.

A proposal sees what a careful prompt engineer would look at: the predictor's fields and
current instruction, a summary of the data (its shape computed, free and deterministic; what
decides the labels observed by the LM once, over a few batches of examples, so a rule found in
many examples reaches every proposal), demos that worked (bootstrapped traces), and earlier
instructions with their scores. Each proposal draws a different demo set and a different
writing tip, and is sampled at a temperature with its own rollout id, so the candidates differ
while staying cacheable.

Small local models cannot follow that long meta-prompt; for LMs that declare the compact
prompt format (the bundled demo model) the proposer uses the instruction-induction prompt
instead ("these inputs and outputs -> the instruction"), which such a model was trained on.
Such a model is a noisy namer: sampled, it garbles words; shown many examples at once, it
drifts to another task. So induction proposals are many short greedy readings of small example
subsets (2-4, as the model saw in training), and an instruction counts by how many independent
subsets agree on it: the task's wording recurs, noise does not.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from oobleck.adapters.base import format_value
from oobleck.errors import BudgetExceeded, ConfigurationError, OobleckError
from oobleck.example import Example
from oobleck.lm.base import BaseLM
from oobleck.modules.module import Module
from oobleck.modules.predict import Predict
from oobleck.optimizers.induction import examples_line, induction_signature
from oobleck.signatures.signature import Signature, make_signature
from oobleck.signatures.types import type_to_str

__all__ = ["InstructionProposer", "prompt_adapter", "summarize_data"]

logger = logging.getLogger("oobleck.optimizers.proposer")

_TIPS = (
    "",
    "Be concise: one or two sentences.",
    "Be specific about the exact form of the output.",
    "State the goal of the task, then the rule that produces the output.",
    "Mention the mistakes a careless reader would make and how to avoid them.",
    "Write it as a precise rule a machine could follow.",
)

_PROPOSE_INSTRUCTIONS = (
    "You improve the instruction of one step of a language-model program. Read the step's fields, its current "
    "instruction, a summary of the data, examples of correct inputs and outputs, and earlier instructions with the "
    "score each reached (higher is better). Write one new instruction that will make the step answer correctly more "
    "often. Reply with the instruction text only."
)


_OBSERVE_INSTRUCTIONS = (
    "You study a labeled data set for a language-model program. Read the summary, the examples (inputs with their "
    "correct outputs) and the observations made so far on other examples. Write what decides the correct output: the "
    "rules behind the labels, the cases that are easy to get wrong, and the form of the output. Keep the earlier "
    "observations that still hold. Reply with the observations only."
)
_OBSERVATION_BATCH = 10  # examples per observation call: enough to see a pattern, short enough to read closely


def prompt_adapter(program: Module, prompt_lm: BaseLM | None) -> str | None:
    """The adapter the proposals' LM declares (for dry runs: None when no LM is configured yet)."""
    if prompt_lm is not None:
        return prompt_lm.adapter
    predictors = program.named_predictors()
    if not predictors:
        return None
    try:  # the first predictor's LM stands for the program's
        return predictors[0][1].resolve_lm().adapter
    except ConfigurationError:
        return None


def _propose_signature() -> type[Signature]:
    return make_signature(
        "program_step, data_summary, examples, previous_instructions, tip -> instruction", _PROPOSE_INSTRUCTIONS, name="ProposeInstruction"
    )


def _observe_signature() -> type[Signature]:
    return make_signature("data_summary, examples, earlier_observations -> observations", _OBSERVE_INSTRUCTIONS, name="ObserveData")


def _example_rows(examples: Sequence[Example]) -> str:
    """Whole examples, inputs then labels, one per line (program-level: any predictor's proposal can use them)."""
    rows = []
    for ex in examples:
        inputs = set(ex.input_keys or [])
        ins = ", ".join(f"{k}={format_value(ex[k])!r}" for k in ex if k in inputs)
        outs = ", ".join(f"{k}={format_value(ex[k])!r}" for k in ex if k not in inputs)
        rows.append(f"{ins} -> {outs}")
    return "\n".join(rows) or "none"


def summarize_data(examples: Sequence[Example], limit: int = 400) -> str:
    """A short, deterministic description of a data set: fields, lengths, frequent short values."""
    if not examples:
        return "no examples"
    lines = [f"{len(examples)} examples."]
    keys = list(dict.fromkeys(k for ex in examples for k in ex))
    inputs = set(examples[0].input_keys or [])
    for key in keys:
        values = [format_value(ex[key]) for ex in examples if key in ex]
        if not values:
            continue
        mean_len = sum(len(v) for v in values) / len(values)
        role = "input" if key in inputs else "label"
        common = Counter(values).most_common(4)
        if len(set(values)) <= max(2, len(values) // 5):
            spread = ", ".join(f"{v!r} ({n})" for v, n in common)
            lines.append(f"- {key} ({role}): {len(set(values))} distinct values, most common {spread}")
        else:
            lines.append(f"- {key} ({role}): free text, about {mean_len:.0f} characters")
        if role == "label":
            lines += _copied_from(examples, key, inputs)
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _copied_from(examples: Sequence[Example], label: str, inputs: set[str]) -> list[str]:
    """Say so when a label is usually copied out of an input: an extraction task, a fact worth stating."""
    out = []
    for key in sorted(inputs):
        pairs = [(format_value(ex[label]).strip().lower(), format_value(ex[key]).lower()) for ex in examples if label in ex and key in ex]
        copied = sum(1 for value, text in pairs if value and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text))
        if pairs and copied >= 0.5 * len(pairs):
            out.append(f"  {label} appears verbatim in {key} in {100 * copied / len(pairs):.0f}% of examples")
    return out


def _describe_step(name: str, predictor: Predict) -> str:
    signature = predictor.signature
    parts = [f"step {name!r}: {signature.signature}"]
    for field_name, field in signature.fields.items():
        role = "input" if field_name in signature.input_fields else "output"
        desc = f" - {field.desc}" if getattr(field, "desc", None) else ""
        parts.append(f"  {role} {field_name}: {type_to_str(field.annotation)}{desc}")
    parts.append(f"current instruction: {signature.instructions}")
    return "\n".join(parts)


def _examples_text(signature: type[Signature], demos: Sequence[Mapping[str, Any]], limit: int = 10) -> str:
    rows = []
    for demo in list(demos)[:limit]:
        ins = ", ".join(f"{n}={format_value(demo[n])!r}" for n in signature.input_fields if n in demo)
        outs = ", ".join(f"{n}={format_value(demo[n])!r}" for n in signature.output_fields if n in demo)
        if ins and outs:
            rows.append(f"{ins} -> {outs}")
    return "\n".join(rows) or "none"


def _clean(text: str) -> str:
    text = " ".join(str(text).split())
    return text.strip().strip('"').strip()


class InstructionProposer:
    """Proposes ``num_candidates`` instructions per predictor (the current one always first).

    ``prompt_lm``: the LM that writes proposals (default: each predictor's own LM).
    ``pool``: instructions the user already has, as a list (every predictor) or a dict by
    predictor name; they join the candidates. ``style``: ``"meta"`` (the long meta-prompt),
    ``"induction"`` (inputs and outputs -> instruction) or ``"auto"`` (induction for LMs that
    declare the compact adapter). ``temperature``: for proposals after the first (default 1.0
    for meta, 0.0 for induction, whose variety comes from the example subsets).
    ``induction_samples``: induction readings per predictor (default three per wanted
    candidate); candidates are the readings that at least two subsets agree on, most agreed
    first (or the most agreed ones when none repeat). ``observation_batches``: for the meta
    style, the LM first reads up to this many batches of labeled examples, each time with the
    observations so far, and writes what decides the labels; every proposal sees the result
    next to the data summary (0: none). Rules a data set follows but no field states are found
    this way once, instead of by each proposal from its own few examples.
    """

    def __init__(self, prompt_lm: BaseLM | None = None, *, num_candidates: int = 6, pool: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
                 style: str = "auto", temperature: float | None = None, induction_samples: int | None = None, observation_batches: int = 3,
                 seed: int = 0):  # fmt: skip
        if style not in {"auto", "meta", "induction"}:
            raise ConfigurationError(f"InstructionProposer style must be 'auto', 'meta' or 'induction', not {style!r}")
        if num_candidates < 1:
            raise ConfigurationError("InstructionProposer needs num_candidates >= 1")
        if induction_samples is not None and induction_samples < 1:
            raise ConfigurationError("InstructionProposer needs induction_samples >= 1")
        if observation_batches < 0:
            raise ConfigurationError("InstructionProposer needs observation_batches >= 0")
        self.prompt_lm = prompt_lm
        self.num_candidates = num_candidates
        self.pool = pool
        self.style = style
        self.temperature = temperature
        self.induction_samples = induction_samples
        self.observation_batches = observation_batches
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {"num_candidates": self.num_candidates, "style": self.style, "temperature": self.temperature,
                "induction_samples": self.induction_samples, "observation_batches": self.observation_batches, "seed": self.seed,
                "prompt_lm": self.prompt_lm.describe()["model"] if self.prompt_lm is not None else None,
                "pool": self.pool if self.pool is None or isinstance(self.pool, Mapping) else list(self.pool)}  # fmt: skip

    def _user_pool(self, name: str) -> list[str]:
        if self.pool is None:
            return []
        if isinstance(self.pool, Mapping):
            return [str(s) for s in self.pool.get(name, [])]
        return [str(s) for s in self.pool]

    def planned_calls(self, lm_adapter: str | None) -> float:
        """Proposal calls per predictor, for dry runs (meta: a quarter of proposals repeat and are asked again)."""
        if self.style_for(lm_adapter) == "induction":
            return float(self._induction_samples(self.num_candidates - 1))
        return 1.25 * (self.num_candidates - 1)

    def planned_observation_calls(self, lm_adapter: str | None, n_train: int) -> int:
        """Observation calls per ``propose`` (once for the whole program), for dry runs."""
        if self.style_for(lm_adapter) == "induction":
            return 0
        return min(self.observation_batches, math.ceil(n_train / _OBSERVATION_BATCH))

    def observe(self, lm: BaseLM, trainset: Sequence[Example], summary: str | None = None) -> str:
        """What the LM finds decides the labels, read over up to ``observation_batches`` batches.

        "" when there are none to read or ``lm`` gets the induction style (it cannot write them).
        ``summary``: ``summarize_data(trainset)``, when the caller has it already.
        """
        if self.style_for(lm.adapter) != "meta":
            return ""
        rng = random.Random(f"{self.seed}-observe")
        order = rng.sample(list(trainset), len(trainset))
        summary = summarize_data(trainset) if summary is None else summary
        notes = ""
        for i in range(min(self.observation_batches, math.ceil(len(order) / _OBSERVATION_BATCH))):
            batch = order[i * _OBSERVATION_BATCH : (i + 1) * _OBSERVATION_BATCH]
            try:
                observer = Predict(_observe_signature(), lm=lm, temperature=0.0, rollout_id=f"observe-{self.seed}-{i}")
                text = observer(data_summary=summary, examples=_example_rows(batch), earlier_observations=notes or "none yet").observations
            except BudgetExceeded:
                raise
            except OobleckError as exc:  # the proposals still have the computed summary
                logger.warning("data observation %d failed (%s); keeping the observations so far", i, exc)
                break
            notes = _clean(text) or notes
        return notes

    def observe_program(self, program: Module, trainset: Sequence[Example], summary: str | None = None) -> str:
        """``observe`` for a whole program: by the first predictor's LM that gets meta-style proposals ("" when none does)."""
        for _, predictor in program.named_predictors():
            lm = self.prompt_lm or predictor.resolve_lm()
            if self.style_for(lm.adapter) == "meta":
                return self.observe(lm, trainset, summary)
        return ""

    def style_for(self, adapter: str | None) -> str:
        """The prompt style used for an LM that declares ``adapter``."""
        if self.style != "auto":
            return self.style
        return "induction" if adapter == "compact" else "meta"

    def _induction_samples(self, room: int) -> int:
        return self.induction_samples if self.induction_samples is not None else 3 * max(room, 0)

    def propose(self, program: Module, trainset: Sequence[Example], *, demo_sets: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]] = (),
                history: Mapping[str, Sequence[tuple[str, float]]] | None = None, observations: str | None = None,
                count: int | None = None) -> dict[str, list[str]]:  # fmt: skip
        """Instruction candidates per predictor name, deduplicated, the current instruction first.

        ``demo_sets``: candidate demo sets (by predictor name) to show as examples; the labeled
        trainset fills in when a predictor has none. ``history``: earlier (instruction, score)
        pairs per predictor. ``observations``: from an earlier ``observe`` (a caller proposing
        several times reads the data once); by default they are made here, for the meta style.
        ``count``: new candidates wanted beyond the current instruction and the pool (default
        ``num_candidates - 1``).
        """
        rng = random.Random(self.seed)
        computed = summarize_data(trainset)
        if observations is None:
            observations = self.observe_program(program, trainset, computed)
        out: dict[str, list[str]] = {}
        for name, predictor in program.named_predictors():
            lm = self.prompt_lm or predictor.resolve_lm()
            style = self.style_for(lm.adapter)
            summary = f"{computed}\nobservations: {observations}" if observations else computed
            current = predictor.signature.instructions
            found = [current, *self._user_pool(name)]
            sets = [list(s.get(name, [])) for s in demo_sets if s.get(name)]
            labeled = [dict(ex) for ex in trainset]
            wanted = (self.num_candidates - 1 if count is None else count) + len(found)
            if style == "induction":
                found += self._induce(name, predictor, lm, sets, labeled, rng, wanted - len(dict.fromkeys(found)))
            else:
                self._meta(name, predictor, lm, sets, labeled, rng, found, wanted, summary, history)
            out[name] = list(dict.fromkeys(found))[:wanted]
            logger.info("%s: %d instruction candidates", name, len(out[name]))
        return out

    def _meta(self, name: str, predictor: Predict, lm: BaseLM, sets: list[list[dict[str, Any]]], labeled: list[dict[str, Any]],
              rng: random.Random, found: list[str], wanted: int, summary: str,
              history: Mapping[str, Sequence[tuple[str, float]]] | None) -> None:  # fmt: skip
        """Ask the meta-prompt until ``found`` holds ``wanted`` distinct instructions (or twice the candidates were asked)."""
        temperature = 1.0 if self.temperature is None else self.temperature
        attempts = 0
        while len(dict.fromkeys(found)) < wanted and attempts < 2 * self.num_candidates:
            attempt, attempts = attempts, attempts + 1
            demos = sets[attempt % len(sets)] if sets else rng.sample(labeled, min(4, len(labeled)))
            if len(demos) < 2:
                demos = demos + rng.sample(labeled, min(4, len(labeled)))
            extra = [d for d in rng.sample(labeled, min(10, len(labeled))) if d not in demos]  # ground it in up to 10 worked examples
            demos = (list(demos) + extra)[:10]
            settings = {"temperature": temperature if attempt else 0.0, "rollout_id": f"propose-{name}-{self.seed}-{attempt}"}
            earlier = "\n".join(f"{score:.3f}: {instr}" for instr, score in (history or {}).get(name, [])) or "none yet"
            try:
                proposer = Predict(_propose_signature(), lm=lm, **settings)
                text = proposer(program_step=_describe_step(name, predictor), data_summary=summary,
                                examples=_examples_text(predictor.signature, demos), previous_instructions=earlier,
                                tip=_TIPS[attempt % len(_TIPS)] or "none").instruction  # fmt: skip
            except BudgetExceeded:
                raise
            except OobleckError as exc:  # an unparseable proposal is just one candidate fewer
                logger.debug("proposal %d for %s failed: %s", attempt, name, exc)
                continue
            text = _clean(text)
            if text:
                found.append(text)

    def _induce(self, name: str, predictor: Predict, lm: BaseLM, sets: list[list[dict[str, Any]]], labeled: list[dict[str, Any]],
                rng: random.Random, room: int) -> list[str]:  # fmt: skip
        """Up to ``room`` instructions named by the most independent example subsets (see the module docstring)."""
        signature = predictor.signature
        pool: dict[str, dict[str, Any]] = {}
        for demo in [d for s in sets for d in s] + labeled:  # demos that worked first, then the labeled trainset
            line = examples_line(signature, [demo])
            if line:
                pool.setdefault(line, dict(demo))
        examples = list(pool.values())
        if room <= 0 or not examples:
            return []
        temperature = 0.0 if self.temperature is None else self.temperature
        votes: Counter[str] = Counter()
        seen: set[tuple[int, ...]] = set()
        for attempt in range(self._induction_samples(room)):
            for _ in range(8):  # a subset already read would only repeat its reading
                picked = tuple(sorted(rng.sample(range(len(examples)), min(len(examples), rng.randint(2, 4)))))
                if picked not in seen:
                    break
            seen.add(picked)
            demos = [examples[i] for i in rng.sample(picked, len(picked))]
            settings = {"temperature": temperature, "rollout_id": f"propose-{name}-{self.seed}-{attempt}"}
            try:
                proposer = Predict(induction_signature(), lm=lm, adapter="compact", **settings)
                text = _clean(proposer(examples=examples_line(signature, demos)).instruction)
            except BudgetExceeded:
                raise
            except OobleckError as exc:  # an unparseable reading is just one vote fewer
                logger.debug("induction %d for %s failed: %s", attempt, name, exc)
                continue
            if text:
                votes[text] += 1
        ranked = [text for text, _ in votes.most_common()]  # ties keep the order first read
        agreed = [text for text in ranked if votes[text] >= 2]
        logger.debug("%s: induction votes %s", name, dict(votes))
        return (agreed or ranked)[:room]
