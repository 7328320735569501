"""Two worker processes share one optuna study on a real storage: no trial is lost or run twice.

This proves the storage infrastructure distributed compiles stand on (SQLite file locally, a real
PostgreSQL server from tests/pg_server.py); compile-level distributed tests build on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

WORKERS = 2
QUOTA = 12  # trials per worker in "quota" mode
MAX_TRIALS = 24  # study-wide cap in "max_trials" mode

# A worker: loads the study, waits for its peers (so they really run at once), runs trials and
# prints the numbers of the trials it ran as JSON.
WORKER = r"""
import json, pathlib, sys, time
import optuna
from optuna.study import MaxTrialsCallback

url, name, mode, n, ready_dir, index, workers = sys.argv[1:]
n, workers = int(n), int(workers)
optuna.logging.set_verbosity(optuna.logging.WARNING)
engine_kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=int(index)))

ready = pathlib.Path(ready_dir)
(ready / index).touch()
deadline = time.monotonic() + 60
while len(list(ready.iterdir())) < workers:
    if time.monotonic() > deadline:
        sys.exit("peers never became ready")
    time.sleep(0.01)

def objective(trial):
    time.sleep(0.01)  # long enough for the workers' trials to interleave
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x

mine = []
callbacks = [lambda study, trial: mine.append(trial.number)]
if mode == "max_trials":
    callbacks.append(MaxTrialsCallback(n, states=None))  # counts RUNNING trials too: the tightest stop
study.optimize(objective, n_trials=n, callbacks=callbacks)  # n_trials also bounds a worker on its own
print(json.dumps(mine))
"""


def _storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'study.db'}"


def _engine_kwargs(url: str) -> dict:
    # SQLite serialises writers; concurrent workers wait on the lock instead of failing at once.
    return {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}


def _run_workers(url: str, name: str, mode: str, n: int, tmp_path: Path) -> list[list[int]]:
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, name, mode, str(n), str(ready), str(index), str(WORKERS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(WORKERS)
    ]
    ran = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-3000:]}"
        ran.append(json.loads(out.strip().splitlines()[-1]))
    return ran


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("mode", ["quota", "max_trials"])
def test_two_worker_processes_finish_one_study(backend: str, mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import optuna
    from optuna.trial import TrialState

    url = _storage_url(backend, tmp_path, request)
    name = f"smoke-{mode}-{uuid.uuid4().hex[:8]}"  # the PostgreSQL database is shared by the session
    storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    optuna.create_study(study_name=name, storage=storage, direction="minimize")

    ran = _run_workers(url, name, mode, QUOTA if mode == "quota" else MAX_TRIALS, tmp_path)

    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials if t.state != TrialState.COMPLETE]
    assert sorted(numbers) == list(range(len(trials))), "trial numbers must be unique and gap-free"
    claimed = [number for worker in ran for number in worker]
    assert sorted(claimed) == sorted(numbers), "each trial was run by exactly one worker"
    assert all(worker for worker in ran), f"every worker ran trials: {[len(w) for w in ran]}"
    assert all(t.value == pytest.approx(t.params["x"] ** 2) for t in trials)
    if mode == "quota":
        assert len(trials) == WORKERS * QUOTA
    else:
        # Workers check the cap between trials, so peers deciding at the same instant can each
        # start one more: at most WORKERS - 1 trials past the cap, never fewer than the cap.
        assert MAX_TRIALS <= len(trials) <= MAX_TRIALS + WORKERS - 1
