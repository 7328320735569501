"""``CompileSession``: one compile's persistent state in an optuna storage, and its budget.

Every candidate an optimizer scores is an optuna trial: its score, what it cost, a label, the
candidate's hash and its *index* (the step of the optimizer's loop that produced it). Setup work
that must be identical for every worker (a candidate pool) is kept in the study's attributes.
That one storage gives three features at once:

- resume: re-running the same compile finds the finished trials and replays them (score and
  spend) instead of calling the LM again; the trial in flight at a crash is failed and redone;
- distribution: several processes or machines open the same study (``--storage``/``--study``)
  and take trials from it; optuna's RDB storage does the locking and its heartbeat fails trials
  of workers that died;
- budgets that survive restarts: the spend of replayed trials counts as spent.

Storages are optuna's: in memory (no resume), a SQLite file, a journal file, or any RDB URL.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oobleck._json import to_jsonable
from oobleck.errors import BudgetExceeded, ConfigurationError
from oobleck.lm.budget import Budget, Spend, spending

if TYPE_CHECKING:
    import optuna

__all__ = ["CompileSession", "TrialRecord", "open_storage"]

logger = logging.getLogger("oobleck.optimizers.session")

_HEARTBEAT_S = 10
_show_progress: contextvars.ContextVar[bool] = contextvars.ContextVar("oobleck_compile_progress", default=False)


def show_progress(enabled: bool = True) -> contextvars.Token[bool]:
    """Show a live line (trial, best score, spend) on stderr for compiles started after this call."""
    return _show_progress.set(enabled)
_GRACE_S = 40


def open_storage(spec: str | os.PathLike[str] | None) -> Any:
    """An optuna storage from a URL, a file path (``.db``/``.sqlite*`` = SQLite, else journal) or None (memory)."""
    import optuna

    if spec is None:
        return optuna.storages.InMemoryStorage()
    if not isinstance(spec, str):
        spec = str(spec)
    if "://" not in spec:
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in {".db", ".sqlite", ".sqlite3"}:
            spec = f"sqlite:///{path.resolve()}"
        else:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(str(path)))
    if spec.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(spec[len("journal://"):]))
    engine_kwargs: dict[str, Any] = {}
    if spec.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers write to one file
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(spec, engine_kwargs=engine_kwargs, heartbeat_interval=_HEARTBEAT_S, grace_period=_GRACE_S)
        except ImportError as exc:
            raise ConfigurationError(f"the storage {_redact(spec)} needs a database driver: {exc} (for PostgreSQL: pip install 'oobleck[postgres]')") from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's errors name the URL's problem; say which storage failed
            # Workers starting together race to create the tables: the loser finds them made.
            if any(s in str(exc) for s in ("already exists", "UNIQUE constraint", "duplicate key")) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ConfigurationError(f"cannot open the optuna storage {_redact(spec)}: {type(exc).__name__}: {exc}") from None
    raise AssertionError("unreachable")


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def candidate_key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(dict(payload)), sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class TrialRecord:
    """One scored candidate as the report shows it."""

    number: int
    index: int
    state: str
    label: str
    score: float | None
    spend: dict[str, Any]
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    full_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "index": self.index, "state": self.state, "label": self.label, "score": self.score,
                "full_score": self.full_score, "calls": self.spend.get("calls", 0),
                "tokens": self.spend.get("prompt_tokens", 0) + self.spend.get("completion_tokens", 0),
                "cost": self.spend.get("cost", 0.0), "seconds": round(self.seconds, 3), "params": self.params}  # fmt: skip


class CompileSession:
    """A compile's study, spend and budget. Use as a context manager around the search.

    ``exclusive`` says this process is the only worker: trials left running by a killed run
    are failed at once so they can be redone. Shared studies leave that to the heartbeat.
    """

    def __init__(self, *, storage: Any = None, study_name: str | None = None, budget: Budget | None = None,
                 fingerprint: Mapping[str, Any] | None = None, exclusive: bool = True, direction: str = "maximize",
                 pruner: Any = None):  # fmt: skip
        self.storage_spec = storage
        self.budget = budget or Budget()
        self.fingerprint = to_jsonable(dict(fingerprint or {}))
        self.study_name = study_name or f"oobleck-{candidate_key(self.fingerprint)}"
        self.exclusive = exclusive
        self.direction = direction
        self.pruner = pruner
        self.spend = Spend()
        self.stopped: str | None = None
        self.replayed = 0
        self.charged: set[str] = set()  # stored results whose spend this run has already counted
        self._scope: Any = None
        self._display: _LiveLine | None = None
        self._best: float | None = None
        self._steps = 0
        self._study: optuna.Study | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = self._open()
        return self._study

    def _open(self) -> optuna.Study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(self.storage_spec) if not _is_storage(self.storage_spec) else self.storage_spec
        study = optuna.create_study(study_name=self.study_name, storage=storage, direction=self.direction, load_if_exists=True,
                                    pruner=self.pruner)
        saved = study.user_attrs.get("oobleck.compile")
        if saved is None:
            study.set_user_attr("oobleck.compile", self.fingerprint)
        elif saved != self.fingerprint:
            changed = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
            raise ConfigurationError(
                f"study {self.study_name!r} holds a different compile (differs in {changed}); "
                "use another --study name, or delete the study to start over"
            )
        if self.exclusive:
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                logger.info("trial %d was left running by an interrupted compile; it will be redone", trial.number)
                study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
        if done:
            logger.info("resuming study %r: %d finished trials will be replayed", self.study_name, len(done))
        return study

    def __enter__(self) -> CompileSession:  # noqa: PYI034
        _ = self.study
        self._scope = spending(self.budget, spent=self.spend)
        self._scope.__enter__()
        if _show_progress.get():
            self._display = _LiveLine(self)
        return self

    def __exit__(self, *exc: object) -> None:
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.__exit__(*exc)
        live, self._display = self._display, None
        if live is not None:
            live.close()

    # -- shared setup ------------------------------------------------------------------------

    def shared(self, name: str, compute: Callable[[], Any]) -> Any:
        """The study's one value of ``compute()``: stored by the first run, returned to every later one.

        ``compute()`` still runs each time (from the LM cache after the first), so its spend is
        charged the same way in a resumed run, which then reaches the same point of its budget;
        the stored value wins, so workers whose LM sampled differently still agree.
        """
        key = f"oobleck.shared.{name}"
        value = compute()
        stored = self.study.user_attrs.get(key)
        if stored is None:
            self.study.set_user_attr(key, to_jsonable(value))
            stored = self.study.user_attrs.get(key)
        return stored

    # -- trials ------------------------------------------------------------------------------

    def finished(self) -> list[Any]:
        """Finished (complete or pruned) trials in order; failed ones are ignored."""
        import optuna

        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return sorted(self.study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)

    def _live(self) -> list[Any]:
        import optuna

        return [t for t in self.study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.FAIL]

    def claimed(self) -> int:
        """Trials finished or running (by any worker): the steps already taken."""
        return len(self._live())

    def index_of(self, trial: Any) -> int:
        """The loop step of a new trial: live trials numbered before it (failed ones were redone)."""
        return sum(1 for t in self._live() if t.number < trial.number)

    def replay(self, index: int) -> Any | None:
        """The finished trial of loop step ``index``, its spend charged again; None when not run yet."""
        for trial in self.finished():
            if trial.user_attrs.get("index") == index:
                self.spend.add(trial.user_attrs.get("spend", {}))
                self.replayed += 1
                if trial.value is not None:
                    self._best = trial.value if self._best is None else max(self._best, trial.value)
                if self._display is not None:
                    self._display.update()
                self._check_budget_after_replay()
                return trial
        return None

    def _check_budget_after_replay(self) -> None:
        b, s = self.budget, self.spend
        over = (b.max_lm_calls is not None and s.calls > b.max_lm_calls) or (b.max_tokens is not None and s.tokens > b.max_tokens) \
            or (b.max_cost is not None and s.cost > b.max_cost)  # fmt: skip
        if over:
            raise BudgetExceeded(f"the replayed trials already spend more than the budget {b.to_dict()}", limit="replay")

    def ask(self, index: int, distributions: Mapping[str, Any] | None = None, *, sampler: Any = None) -> Any:
        """A new trial for loop step ``index`` (params drawn by ``sampler`` from ``distributions``)."""
        import optuna

        if not self.exclusive:
            self._fail_stale()
        if sampler is not None:
            self.study.sampler = sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # The heartbeat works with ask-and-tell too; stale trials are failed above.
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = self.study.ask(dict(distributions or {}))
        trial.set_user_attr("index", index)
        return trial

    def run(self, trial: Any, label: str, work: Callable[[Any], float], *, key: str = "") -> float:
        """Run ``work(trial)`` (which scores the candidate), record score and spend, and tell optuna.

        ``BudgetExceeded`` fails the trial (it is redone with more budget), records why the
        compile stopped, and propagates; a pruned trial is told as pruned with its last score.
        """
        import optuna

        trial.set_user_attr("label", label)
        if key:
            trial.set_user_attr("key", key)
        started = time.perf_counter()
        state = optuna.trial.TrialState.COMPLETE
        with spending() as trial_spend:
            try:
                value = float(work(trial))
            except optuna.TrialPruned as pruned:
                state = optuna.trial.TrialState.PRUNED
                value = float(pruned.args[0]) if pruned.args and isinstance(pruned.args[0], (int, float)) else _last_value(trial)
            except BudgetExceeded as exc:
                self.stopped = str(exc)
                trial.set_user_attr("spend", trial_spend.to_dict())
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            except BaseException:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
        trial.set_user_attr("spend", trial_spend.to_dict())
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
        if state == optuna.trial.TrialState.PRUNED:
            trial.set_user_attr("pruned_score", value)
            self.study.tell(trial, state=state)
        else:
            self.study.tell(trial, value)
            self._best = value if self._best is None else max(self._best, value)
        self._steps += 1
        if self._display is not None:
            self._display.update()
        return value

    def records(self) -> list[TrialRecord]:
        """Every finished trial, for reports (failed trials were redone and are left out)."""
        out = []
        for t in self.finished():
            score = t.value if t.value is not None else t.user_attrs.get("pruned_score")
            out.append(TrialRecord(number=t.number, index=int(t.user_attrs.get("index", t.number)), state=t.state.name.lower(),
                                   label=str(t.user_attrs.get("label", "")), score=score, spend=dict(t.user_attrs.get("spend", {})),
                                   seconds=float(t.user_attrs.get("seconds", 0.0)), params=dict(t.params),
                                   full_score=t.user_attrs.get("full_score")))  # fmt: skip
        return sorted(out, key=lambda r: (r.index, r.number))

    def _fail_stale(self) -> None:
        """Fail trials whose worker stopped sending heartbeats (it died), so they are redone."""
        import optuna

        if hasattr(self.study._storage, "get_heartbeat_interval") and self.study._storage.get_heartbeat_interval():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def wait_for_others(self, poll_s: float = 0.5) -> None:
        """Block until no trial of the study is running (other workers finish theirs, or die and go stale)."""
        import optuna

        while True:
            running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if not running:
                return
            self._fail_stale()
            time.sleep(poll_s)

    def provenance(self) -> dict[str, Any]:
        """What the artifact records about the search: deterministic for a seed and a cache.

        Timings, billed calls and how many trials were replayed vary between an uninterrupted
        and a resumed run, so they go to the report, not into program.json.
        """
        spend = {k: v for k, v in self.spend.to_dict().items() if k != "billed_calls"}
        # optuna's trial numbers count the trial a crash interrupted; the step index does not.
        trials = [{k: v for k, v in r.to_dict().items() if k not in ("seconds", "number")} for r in self.records()]
        return {"spend": spend, "budget": self.budget.to_dict(), "stopped": self.stopped, "study": self.study_name, "trials": trials}

    def report_extras(self) -> dict[str, Any]:
        return {"trials": [r.to_dict() for r in self.records()], "spend": self.spend.to_dict(), "replayed_trials": self.replayed,
                "budget": self.budget.to_dict(), "stopped": self.stopped}  # fmt: skip


def _is_storage(value: Any) -> bool:
    return value is not None and not isinstance(value, (str, os.PathLike))


def _last_value(trial: Any) -> float:
    values = trial.storage.get_trial(trial._trial_id).intermediate_values if hasattr(trial, "storage") else {}
    return float(values[max(values)]) if values else 0.0


class _LiveLine:
    """One rich line on stderr, redrawn after each trial: steps run, best score, spend, budget."""

    def __init__(self, session: CompileSession):
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.session = session
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=False)  # fmt: skip
        self.task = self.progress.add_task(self._text(), total=None)
        self.progress.start()

    def _text(self) -> str:
        s, b = self.session, self.session.budget
        best = "-" if s._best is None else f"{100 * s._best:.1f}%"
        calls = f"{s.spend.calls:,}" + (f"/{b.max_lm_calls:,}" if b.max_lm_calls is not None else "")
        cost = f"${s.spend.cost:.4f}" + (f"/${b.max_cost:g}" if b.max_cost is not None else "")
        return f"trials {s._steps} (+{s.replayed} replayed)  best {best}  LM calls {calls}  tokens {s.spend.tokens:,}  {cost}"

    def update(self) -> None:
        self.progress.update(self.task, description=self._text())

    def close(self) -> None:
        self.update()
        self.progress.stop()

