"""A second simulated task with room above what one good sentence buys: support-ticket routing.

Why a second task: on the "which animal?" task (``_sim_lm.py``) one key phrase lifts a prompt
to the simulator's ceiling, every strong optimizer finds it, and the comparison ends in a tie.
Here the right prompt must state six company-specific routing rules, one per queue; each rule
is found only from evidence of its own queue, so instructions differ in how many rules they
carry, and search, feedback and accumulation can matter. Its rules were fixed and committed
(with ``benchmarks/routing_preregistration.md``) before the first comparison run.

The task: a customer message about an order goes to one of six queues. Three pairs are easy to
confuse, and the company's policy decides each pair::

    refunds    duplicate or leftover charges         (a naive reader says billing)
    billing    invoices, receipts, tax lines         (a naive reader says refunds)
    returns    items that arrived broken or wrong    (a naive reader says shipping)
    shipping   parcels late, lost or to redirect     (a naive reader says returns)
    account    sign-in, locked accounts, email       (a naive reader says technical)
    technical  crashes, error pages, slow pages      (a naive reader says account)

The simulated model sees only a request's messages. It finds ticket texts anywhere in them
(they come from fixed templates), the output field names in the system message (both
frameworks' chat adapters list them as ``1. `queue` (str)``), and rule sentences: the
simulator writes every instruction and summary itself, so a rule is a known sentence, found
verbatim wherever a framework copies it. Per queue ``c`` of the query or of the writing:

* evidence ``e_c``: tickets of queue ``c`` followed, before the next ticket, by the word ``c``
  (a worked example, however formatted: demo turns, ``ticket=... -> queue=...`` lines, example
  reprs, feedback such as "expected refunds"). For answers, the query's own text does not count.
* ``R_c``: a right rule for ``c`` appears in the prompt; ``W_c``: a wrong rule (sending ``c``
  to its partner) appears and no right one does.

Answering (output field ``queue``; the query is the last ticket of the last message):
right with probability 0.90 under ``R_c`` (0.95 with ``e_c >= 1``); 0.10 under ``W_c``; else
``min(0.80, 0.45 + 0.15 e_c)``. A wrong answer is the partner queue with probability 0.8,
else one of the other four. Zero-shot a prompt scores 0.45; all six rules with demos, about
0.93 to 0.95.

Writing an instruction (a field whose name contains ``instruction``) or any other text (data
observations, summaries, descriptions): an opening sentence, then for each queue ``c`` in a
fixed order one draw ``u``: a right rule if ``u < q_R``, a wrong rule if
``u < q_R + q_W``, else nothing, where ``q_R = max(0.85 if R_c, min(0.75, 1 - 0.7^e_c))``
(an LM keeps most of a rule it is shown, and finds a rule from examples of its queue) and
``q_W = 0`` under ``R_c``, ``0.85 * 0.6^e_c`` under ``W_c`` (examples talk it out of a wrong
rule it was shown), else 0.10.

Draws: uniform numbers from blake2b(seed, kind, the whole prompt text, k), with ``k`` counting
earlier identical requests for writing (sampled: asking again gives a fresh sample) and always
0 for answers (greedy). Format: ``[[ ## field ## ]]`` sections ending with
``[[ ## completed ## ]]`` when the system message shows that layout, else one JSON object.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from typing import Any

from _sim_lm import _content, output_fields

QUEUES = ("refunds", "billing", "returns", "shipping", "account", "technical")
PARTNER = {"refunds": "billing", "billing": "refunds", "returns": "shipping", "shipping": "returns", "account": "technical",
           "technical": "account"}  # fmt: skip
ITEMS = ("lamp", "kettle", "jacket", "blender", "backpack", "monitor", "heater", "tent", "printer", "scooter", "camera", "speaker")
TEMPLATES = {
    "refunds": (
        "I was charged twice for order {n}, my card shows two payments for the {item}.",
        "My bank statement has a duplicate payment for the {item} on order {n}.",
        "Order {n} was cancelled {d} days ago but the charge for the {item} is still on my card.",
    ),
    "billing": (
        "Please send an invoice with my company name for order {n}, the {item}.",
        "The receipt for order {n} shows the wrong billing address for the {item}.",
        "I need the tax on my payment for the {item} in order {n} listed on its own line.",
    ),
    "returns": (
        "The {item} from order {n} arrived broken in the delivery box.",
        "The parcel for order {n} came with the wrong {item} inside.",
        "The {item} in order {n} was delivered {d} days ago and it does not work at all.",
    ),
    "shipping": (
        "Order {n} with the {item} has not arrived after {d} days.",
        "Tracking for order {n}, the {item}, has not moved in {d} days.",
        "Can the {item} from order {n} be delivered to a different address?",
    ),
    "account": (
        "I cannot sign in to see order {n}, the reset email never came after {d} tries.",
        "Please change the email on my profile, the confirmation for the {item} in order {n} went to the old one.",
        "My profile was locked after {d} failed sign-in attempts while buying the {item}, order {n}.",
    ),
    "technical": (
        "The app crashes every time I open order {n} for the {item}.",
        "The checkout page shows error {n} when I try to buy the {item}.",
        "The website has been loading for minutes for {d} days whenever I open the {item} page, order {n}.",
    ),
}
RIGHT_RULES = {
    "refunds": ("Duplicate or leftover charges (paid twice, still charged after cancelling) go to refunds, not billing.",
                "Money taken twice or not given back after a cancellation belongs in refunds."),
    "billing": ("Requests for invoices, receipts or tax lines go to billing, not refunds.",
                "Paperwork about a payment (an invoice, a receipt, the tax shown) belongs in billing."),
    "returns": ("Items that arrived broken, wrong or not working go to returns, not shipping.",
                "Anything wrong with what was inside the parcel belongs in returns."),
    "shipping": ("Parcels that are late, stuck in tracking or need a new address go to shipping, not returns.",
                 "Where a parcel is or when it arrives belongs in shipping."),
    "account": ("Sign-in trouble, locked profiles and email changes go to account, not technical.",
                "Who the customer is to the shop (signing in, the profile, its email) belongs in account."),
    "technical": ("App crashes, error pages and slow pages go to technical, not account.",
                  "Software that fails (a crash, an error code, a page that will not load) belongs in technical."),
}  # fmt: skip
WRONG_RULES = {
    "refunds": "Anything about a charge on the card goes to billing.",
    "billing": "Any message about a payment goes to refunds.",
    "returns": "Anything that mentions a delivery goes to shipping.",
    "shipping": "A parcel that has not come as expected goes to returns.",
    "account": "Any trouble using the site goes to technical.",
    "technical": "Anything that happens while signed in goes to account.",
}
OPENERS = (
    "Route the support ticket to the right queue.",
    "Read the customer message and answer with the queue that should handle it, as one lowercase word.",
    "Classify the ticket into one of the support queues.",
)
TEXT_OPENERS = (
    "The data are short customer messages about orders; each is routed to one queue.",
    "Each example is a support ticket about one order, labeled with the queue that handles it.",
)
INSTRUCTION = "Route the support ticket to the right queue."
INPUT, OUTPUT = "ticket", "queue"


def _pattern(template: str) -> re.Pattern[str]:
    text = re.escape(template)
    for slot, body in (("n", r"\d{4,5}"), ("d", r"\d{1,2}"), ("item", "|".join(ITEMS))):
        text = text.replace(re.escape("{" + slot + "}"), f"(?:{body})")
    return re.compile(text)


PATTERNS = [(queue, _pattern(t)) for queue, templates in TEMPLATES.items() for t in templates]


def find_tickets(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, queue, ticket text) of every ticket in ``text``, in order."""
    found = [(m.start(), m.end(), queue, m.group(0)) for queue, pattern in PATTERNS for m in pattern.finditer(text)]
    return sorted(found)


def evidence(text: str, tickets: list[tuple[int, int, str, str]], skip: str | None = None) -> Counter[str]:
    """Worked examples per queue: tickets followed by their queue's name before the next ticket."""
    out: Counter[str] = Counter()
    for i, (_, end, queue, body) in enumerate(tickets):
        stop = tickets[i + 1][0] if i + 1 < len(tickets) else len(text)
        if body != skip and re.search(rf"\b{queue}\b", text[end:stop]):
            out[queue] += 1
    return out


def rules_in(text: str) -> tuple[set[str], set[str]]:
    """Queues with a right rule in ``text``, and queues with a wrong rule and no right one."""
    right = {q for q, sentences in RIGHT_RULES.items() if any(s in text for s in sentences)}
    wrong = {q for q, sentence in WRONG_RULES.items() if sentence in text and q not in right}
    return right, wrong


def rule_coverage(instruction: str) -> float:
    """Share of the six queues whose right rule the instruction states (a wrong rule counts as none)."""
    return len(rules_in(instruction)[0]) / len(QUEUES)


def make_examples(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct labeled tickets, queues balanced in expectation, drawn with ``seed``."""
    rng = random.Random(f"routing-task-{seed}")
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    while len(out) < n:
        queue = rng.choice(QUEUES)
        text = rng.choice(TEMPLATES[queue]).format(n=rng.randint(1000, 99999), d=rng.randint(2, 14), item=rng.choice(ITEMS))
        if text not in seen:
            seen.add(text)
            out.append({INPUT: text, OUTPUT: queue})
    return out


def is_correct(answer: Any, label: str) -> bool:
    return str(answer).strip().strip(".'\"").lower() == label


class RoutingLM:
    """The responder: ``messages -> completion text`` (rules in the module docstring)."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.kinds: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self.answer_probabilities: list[float] = []
        # plumbing counters (no scores): answers whose query was found, evidence seen when writing
        self.plumbing: Counter[str] = Counter()

    def reset_counts(self) -> None:
        self.kinds.clear()
        self._seen.clear()
        self.answer_probabilities = []

    def _draw(self, *parts: Any) -> float:
        digest = hashlib.blake2b("\x1f".join(str(p) for p in (self.seed, *parts)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        system = next((_content(m) for m in messages if m.get("role") == "system"), "")
        text = "\n\n".join(f"[{m.get('role')}]\n{_content(m)}" for m in messages)
        names = output_fields(system) or [OUTPUT]
        tickets = find_tickets(text)
        sample_key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        k = self._seen[sample_key]
        values: dict[str, str] = {}
        for name in names:
            if name == OUTPUT:
                self.kinds["answer"] += 1
                values[name] = self._answer(text, _content(messages[-1]) if messages else "", tickets)
            else:
                kind = "instruction" if "instruction" in name else "text"
                self.kinds[kind] += 1
                values[name] = self._write(kind, text, tickets, k)
        if any(n != OUTPUT for n in names):
            self._seen[sample_key] += 1
        if "[[ ## completed ## ]]" in system:
            return "\n\n".join(f"[[ ## {n} ## ]]\n{v}" for n, v in values.items()) + "\n\n[[ ## completed ## ]]"
        return json.dumps(values)

    def _answer(self, text: str, last: str, tickets: list[tuple[int, int, str, str]]) -> str:
        queries = find_tickets(last)
        if not queries:
            self.plumbing["answer without a ticket"] += 1
            self.answer_probabilities.append(0.0)
            return "unknown"
        self.plumbing["answer with a ticket"] += 1
        _, _, queue, body = queries[-1]
        right, wrong = rules_in(text)
        shown = evidence(text, tickets, skip=body)[queue]
        if queue in right:
            p = 0.95 if shown else 0.90
        elif queue in wrong:
            p = 0.10
        else:
            p = min(0.80, 0.45 + 0.15 * shown)
        self.answer_probabilities.append(p)
        if self._draw("answer", text) < p:
            return queue
        if self._draw("answer-partner", text) < 0.8:
            return PARTNER[queue]
        others = [q for q in QUEUES if q not in (queue, PARTNER[queue])]
        return others[int(self._draw("answer-other", text) * len(others))]

    def _write(self, kind: str, text: str, tickets: list[tuple[int, int, str, str]], k: int) -> str:
        right, wrong = rules_in(text)
        seen = evidence(text, tickets)
        self.plumbing[f"{kind} requests"] += 1
        self.plumbing[f"{kind} worked examples seen"] += sum(seen.values())
        self.plumbing[f"{kind} rules shown"] += len(right)
        openers = OPENERS if kind == "instruction" else TEXT_OPENERS
        sentences = [openers[int(self._draw(kind, "opener", text, k) * len(openers))]]
        for queue in QUEUES:
            e = seen[queue]
            q_right = max(0.85 if queue in right else 0.0, min(0.75, 1 - 0.7**e))
            q_wrong = 0.0 if queue in right else (0.85 * 0.6**e if queue in wrong else 0.10)
            u = self._draw(kind, "rule", queue, text, k)
            if u < q_right:
                phrasings = RIGHT_RULES[queue]
                sentences.append(phrasings[int(self._draw(kind, "phrasing", queue, text, k) * len(phrasings))])
            elif u < q_right + q_wrong:
                sentences.append(WRONG_RULES[queue])
        return " ".join(sentences)
