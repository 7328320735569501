"""A second simulated task with room above what one good sentence buys: support-ticket routing.

Why a second task: on the "which animal?" task (``_sim_lm.py``) one key phrase lifts a prompt
to the simulator's ceiling, every strong optimizer finds it, and the comparison ends in a tie.
Here the right prompt must state six company-specific routing rules, one per queue; each rule
is found only from evidence of its own queue, so instructions differ in how many rules they
carry, and search, feedback and accumulation can matter. Its rules were fixed and committed
(with ``benchmarks/routing_preregistration.md``) before the first comparison run.

The task: a customer message about an order goes to one of six queues. Three pairs are easy to
confuse, and the company's policy decides each pair (the ``SHOP`` domain; ``HELPDESK``, a
university help desk, and ``BANK``, a bank's customer service, each with eight queues in four
pairs, follow the same rules)::

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

import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from _sim_lm import SimulatedLM, is_correct  # noqa: F401  (the same exact-match check as the animal task)


@dataclass(frozen=True)
class Domain:
    """One routing data set: queues in confusable pairs, ticket templates, and the rule sentences the simulator writes."""

    name: str
    instruction: str
    partner: dict[str, str]
    templates: dict[str, tuple[str, ...]]
    right_rules: dict[str, tuple[str, ...]]
    wrong_rules: dict[str, str]
    openers: tuple[str, ...]
    text_openers: tuple[str, ...]
    items: tuple[str, ...]
    numbers: tuple[int, int]  # the range of {n}

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(self.templates)

    @cached_property
    def patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        return [(queue, _pattern(t, self.items)) for queue, templates in self.templates.items() for t in templates]


def _pattern(template: str, items: tuple[str, ...]) -> re.Pattern[str]:
    text = re.escape(template)
    for slot, body in (("n", r"\d{3,5}"), ("d", r"\d{1,2}"), ("item", "|".join(items))):
        text = text.replace(re.escape("{" + slot + "}"), f"(?:{body})")
    return re.compile(text)


SHOP = Domain(
    name="routing",
    instruction="Route the support ticket to the right queue.",
    partner={"refunds": "billing", "billing": "refunds", "returns": "shipping", "shipping": "returns", "account": "technical",
             "technical": "account"},
    templates={
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
    },
    right_rules={
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
    },
    wrong_rules={
        "refunds": "Anything about a charge on the card goes to billing.",
        "billing": "Any message about a payment goes to refunds.",
        "returns": "Anything that mentions a delivery goes to shipping.",
        "shipping": "A parcel that has not come as expected goes to returns.",
        "account": "Any trouble using the site goes to technical.",
        "technical": "Anything that happens while signed in goes to account.",
    },
    openers=(
        "Route the support ticket to the right queue.",
        "Read the customer message and answer with the queue that should handle it, as one lowercase word.",
        "Classify the ticket into one of the support queues.",
    ),
    text_openers=(
        "The data are short customer messages about orders; each is routed to one queue.",
        "Each example is a support ticket about one order, labeled with the queue that handles it.",
    ),
    items=("lamp", "kettle", "jacket", "blender", "backpack", "monitor", "heater", "tent", "printer", "scooter", "camera", "speaker"),
    numbers=(1000, 99999),
)  # fmt: skip
# Added after the first run on SHOP, and registered before its own first run
# (helpdesk_preregistration.md): a held-out check of changes made after that run.
HELPDESK = Domain(
    name="helpdesk",
    instruction="Route the help desk ticket to the right queue.",
    partner={"email": "network", "network": "email", "printing": "hardware", "hardware": "printing", "accounts": "software",
             "software": "accounts", "library": "facilities", "facilities": "library"},
    templates={
        "email": (
            "Messages to my inbox stopped arriving {d} days ago, I sit in {item} room {n}.",
            "My mail client keeps asking for the server password in {item} room {n}.",
            "Mail I send from {item} room {n} bounces back after {d} minutes.",
        ),
        "network": (
            "The wifi in {item} room {n} drops every {d} minutes.",
            "I cannot reach any website from the wired port in {item} room {n}.",
            "The VPN disconnects after {d} minutes when I work from {item} room {n}.",
        ),
        "printing": (
            "The printer on floor {d} of {item} says my print quota is used up, job {n}.",
            "My print job {n} is stuck in the queue for the {item} printer.",
            "Color prints sent from {item} room {n} come out in black and white.",
        ),
        "hardware": (
            "The monitor in {item} room {n} flickers and goes dark after {d} minutes.",
            "The keyboard of lab machine {n} in {item} has {d} dead keys.",
            "The projector in {item} room {n} will not turn on.",
        ),
        "accounts": (
            "My campus password expired {d} days ago and the reset link fails, staff number {n}.",
            "I need access to the shared drive for project {n} in {item}.",
            "My student number {n} shows as disabled after {d} failed logins.",
        ),
        "software": (
            "The statistics package on machine {n} in {item} crashes on start.",
            "I need the design suite installed on lab machine {n} in {item}.",
            "The licence for the maths program on machine {n} expired {d} days ago.",
        ),
        "library": (
            "I cannot renew the {d} books on my card {n}.",
            "The journal database says access denied from {item} room {n}.",
            "Please book study room {n} in the {item} reading area for {d} hours.",
        ),
        "facilities": (
            "The heating in {item} room {n} has been off for {d} days.",
            "The door lock of {item} room {n} is broken.",
            "The lights on floor {d} of {item} flicker all day, near room {n}.",
        ),
    },
    right_rules={
        "email": ("Mail that does not arrive, bounces or asks for the mail password goes to email, not network.",
                  "Anything about sending or receiving mail belongs in email."),
        "network": ("Wifi drops, dead wired ports and VPN trouble go to network, not email.",
                    "Connections that drop or never come up belong in network."),
        "printing": ("Print quotas, stuck print jobs and print settings go to printing, not hardware.",
                     "Anything about a print job belongs in printing."),
        "hardware": ("Broken monitors, keyboards and projectors go to hardware, not printing.",
                     "Physical devices that fail belong in hardware."),
        "accounts": ("Expired passwords, disabled logins and drive access go to accounts, not software.",
                     "Who may log in and what they may open belongs in accounts."),
        "software": ("Crashing programs, installs and licences go to software, not accounts.",
                     "Programs on a machine (running, installing, licensing) belong in software."),
        "library": ("Book renewals, journal access and study room bookings go to library, not facilities.",
                    "Anything the library lends or books belongs in library."),
        "facilities": ("Heating, locks and lights in buildings go to facilities, not library.",
                       "The state of a building or room belongs in facilities."),
    },
    wrong_rules={
        "email": "Anything that stops arriving goes to network.",
        "network": "Any trouble reaching something online goes to email.",
        "printing": "A printer that misbehaves is a device, so it goes to hardware.",
        "hardware": "Any device fault in a shared room goes to printing.",
        "accounts": "Any login problem is a software fault and goes to software.",
        "software": "Anything tied to a user number goes to accounts.",
        "library": "Any request about a room goes to facilities.",
        "facilities": "Anything in a campus building goes to library.",
    },
    openers=(
        "Route the help desk ticket to the right queue.",
        "Read the request and answer with the help desk queue that should take it, as one lowercase word.",
        "Sort the ticket into one of the help desk queues.",
    ),
    text_openers=(
        "The data are short requests to a university help desk; each goes to one queue.",
        "Each example is one help desk ticket from staff or students, labeled with the queue that takes it.",
    ),
    items=("Ashby", "Brook", "Carver", "Dalton", "Elm", "Fenwick", "Grove", "Harlow"),
    numbers=(100, 9999),
)  # fmt: skip
# Added after the help-desk run, when Bayesian gained refinements, and registered before its own
# first run (bank_preregistration.md): a held-out check of that change.
BANK = Domain(
    name="bank",
    instruction="Route the banking customer's message to the right queue.",
    partner={"fraud": "disputes", "disputes": "fraud", "transfers": "deposits", "deposits": "transfers", "cards": "online",
             "online": "cards", "loans": "savings", "savings": "loans"},
    templates={
        "fraud": (
            "There is a payment of {n} on my card to a shop I have never visited.",
            "My card was stolen {d} days ago and someone has used it since.",
            "I got a text about a payment of {n} that I did not make.",
        ),
        "disputes": (
            "The {item} shop took {n} from my card but never sent my order.",
            "The {item} store charged me more than the price we agreed, {n} in all.",
            "The {item} seller promised to pay back {n} {d} days ago and nothing has come.",
        ),
        "transfers": (
            "My transfer of {n} to my landlord has not reached him after {d} days.",
            "I sent {n} abroad and the person got less than I sent.",
            "Please stop the transfer of {n} I made by mistake this morning.",
        ),
        "deposits": (
            "My salary of {n} is not in my balance {d} days after payday.",
            "A cheque for {n} that I paid in has not cleared after {d} days.",
            "The cash I paid in at the {item} branch is missing from my balance, {n} in all.",
        ),
        "cards": (
            "My card is declined at the {item} shop although I have {n} in my balance.",
            "The new card I ordered {d} days ago has not come in the post.",
            "I forgot the PIN of my card ending in {n}.",
        ),
        "online": (
            "The banking app logs me out after {d} seconds every time.",
            "The website shows error {n} when I open my statement.",
            "The sign-in code for the app never reaches my phone, I tried {d} times.",
        ),
        "loans": (
            "Can I pay off the rest of my loan {n} early without a fee?",
            "The rate on my car loan went up by {d} points this month.",
            "My loan repayment of {n} was taken on the wrong day.",
        ),
        "savings": (
            "The interest on my saver account {n} dropped this month.",
            "My fixed term of {d} months ends soon, what happens to account {n}?",
            "I want to take {n} out of my saver pot before the term ends.",
        ),
    },
    right_rules={
        "fraud": ("Payments the customer did not make and stolen cards go to fraud, not disputes.",
                  "Money taken by someone other than the customer belongs in fraud."),
        "disputes": ("A merchant that did not deliver, overcharged or did not pay back goes to disputes, not fraud.",
                     "A disagreement with a shop the customer really paid belongs in disputes."),
        "transfers": ("Money the customer sent that is late, short or to be stopped goes to transfers, not deposits.",
                      "Outgoing payments belong in transfers."),
        "deposits": ("Salary, cheques or cash paid in that do not show in the balance go to deposits, not transfers.",
                     "Money coming into the account belongs in deposits."),
        "cards": ("Declined cards, cards not delivered and forgotten PINs go to cards, not online.",
                  "The plastic card itself (its PIN, its delivery, its use in shops) belongs in cards."),
        "online": ("App log-outs, website errors and sign-in codes go to online, not cards.",
                   "Trouble with the app or the website belongs in online."),
        "loans": ("Loan rates, early payoff and loan repayments go to loans, not savings.",
                  "Money the customer owes the bank belongs in loans."),
        "savings": ("Savings interest, fixed terms and savings pots go to savings, not loans.",
                    "Money the customer keeps with the bank to grow belongs in savings."),
    },
    wrong_rules={
        "fraud": "Any payment the customer complains about goes to disputes.",
        "disputes": "Any money that left the card without the goods goes to fraud.",
        "transfers": "Any money that has not arrived goes to deposits.",
        "deposits": "Any payment that is late goes to transfers.",
        "cards": "Any problem paying goes to online.",
        "online": "Anything about signing in or codes goes to cards.",
        "loans": "Any question about a rate goes to savings.",
        "savings": "Anything about interest goes to loans.",
    },
    openers=(
        "Route the banking customer's message to the right queue.",
        "Read the customer's message and answer with the bank queue that should handle it, as one lowercase word.",
        "Assign the message to one of the bank's service queues.",
    ),
    text_openers=(
        "The data are short messages from bank customers; each goes to one service queue.",
        "Each example is one customer message to a bank, labeled with the queue that handles it.",
    ),
    items=("Alder", "Beacon", "Cobalt", "Dune", "Ember", "Foxley", "Garnet", "Hollis"),
    numbers=(100, 99999),
)  # fmt: skip
DOMAINS = {"routing": SHOP, "helpdesk": HELPDESK, "bank": BANK}
INPUT, OUTPUT = "ticket", "queue"


def find_tickets(domain: Domain, text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, queue, ticket text) of every ticket in ``text``, in order."""
    found = [(m.start(), m.end(), queue, m.group(0)) for queue, pattern in domain.patterns for m in pattern.finditer(text)]
    return sorted(found)


def evidence(text: str, tickets: list[tuple[int, int, str, str]], skip: str | None = None) -> Counter[str]:
    """Worked examples per queue: tickets followed by their queue's name before the next ticket."""
    out: Counter[str] = Counter()
    for i, (_, end, queue, body) in enumerate(tickets):
        stop = tickets[i + 1][0] if i + 1 < len(tickets) else len(text)
        if body != skip and re.search(rf"\b{queue}\b", text[end:stop]):
            out[queue] += 1
    return out


def rules_in(domain: Domain, text: str) -> tuple[set[str], set[str]]:
    """Queues with a right rule in ``text``, and queues with a wrong rule and no right one."""
    right = {q for q, sentences in domain.right_rules.items() if any(s in text for s in sentences)}
    wrong = {q for q, sentence in domain.wrong_rules.items() if sentence in text and q not in right}
    return right, wrong


def rule_coverage(domain: Domain, instruction: str) -> float:
    """Share of the queues whose right rule the instruction states (a wrong rule counts as none)."""
    return len(rules_in(domain, instruction)[0]) / len(domain.queues)


def make_examples(domain: Domain, n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct labeled tickets, queues balanced in expectation, drawn with ``seed``."""
    rng = random.Random(f"{domain.name}-task-{seed}")
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    while len(out) < n:
        queue = rng.choice(domain.queues)
        text = rng.choice(domain.templates[queue]).format(n=rng.randint(*domain.numbers), d=rng.randint(2, 14), item=rng.choice(domain.items))
        if text not in seen:
            seen.add(text)
            out.append({INPUT: text, OUTPUT: queue})
    return out


class RoutingLM(SimulatedLM):
    """The responder: ``messages -> completion text`` (rules in the module docstring).

    It keeps the animal simulator's counters and draws and answers by this module's rules;
    ``plumbing`` counts what the prompts held (queries found, evidence and rules seen), no scores.
    """

    def __init__(self, domain: Domain = SHOP, seed: int = 0):
        super().__init__(seed)
        self.domain = domain

    output = OUTPUT

    def _values(self, text: str, last: str, names: list[str], k: int) -> dict[str, str]:
        tickets = find_tickets(self.domain, text)
        values: dict[str, str] = {}
        for name in names:
            if name == OUTPUT:
                self.kinds["answer"] += 1
                values[name] = self._answer(text, last, tickets)
            else:
                kind = "instruction" if "instruction" in name else "text"
                self.kinds[kind] += 1
                values[name] = self._write(kind, text, tickets, k)
        return values

    def _answer(self, text: str, last: str, tickets: list[tuple[int, int, str, str]]) -> str:
        queries = find_tickets(self.domain, last)
        if not queries:
            self.plumbing["answer without a ticket"] += 1
            self.answer_probabilities.append(0.0)
            return "unknown"
        self.plumbing["answer with a ticket"] += 1
        _, _, queue, body = queries[-1]
        right, wrong = rules_in(self.domain, text)
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
        partner = self.domain.partner[queue]
        if self._draw("answer-partner", text) < 0.8:
            return partner
        others = [q for q in self.domain.queues if q not in (queue, partner)]
        return others[int(self._draw("answer-other", text) * len(others))]

    def _write(self, kind: str, text: str, tickets: list[tuple[int, int, str, str]], k: int) -> str:
        right, wrong = rules_in(self.domain, text)
        seen = evidence(text, tickets)
        self.plumbing[f"{kind} requests"] += 1
        self.plumbing[f"{kind} worked examples seen"] += sum(seen.values())
        self.plumbing[f"{kind} rules shown"] += len(right)
        openers = self.domain.openers if kind == "instruction" else self.domain.text_openers
        sentences = [openers[int(self._draw(kind, "opener", text, k) * len(openers))]]
        for queue in self.domain.queues:
            e = seen[queue]
            q_right = max(0.85 if queue in right else 0.0, min(0.75, 1 - 0.7**e))
            q_wrong = 0.0 if queue in right else (0.85 * 0.6**e if queue in wrong else 0.10)
            u = self._draw(kind, "rule", queue, text, k)
            if u < q_right:
                phrasings = self.domain.right_rules[queue]
                sentences.append(phrasings[int(self._draw(kind, "phrasing", queue, text, k) * len(phrasings))])
            elif u < q_right + q_wrong:
                sentences.append(self.domain.wrong_rules[queue])
        return " ".join(sentences)
