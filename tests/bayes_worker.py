"""A compile in a process of its own, for tests that kill it or run several at once.

usage: python tests/bayes_worker.py STORAGE OUT --cache DIR [--study NAME] [--shared] [--delay S] [--trials N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from support import InstructionSensitiveLM, doubling_dataset

import oobleck as ob
from oobleck.lm.cache import ResponseCache


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("storage")
    parser.add_argument("out")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--study", default=None)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    lm = InstructionSensitiveLM(delay=args.delay, cache=ResponseCache(Path(args.cache) / "cache.sqlite"))
    data = doubling_dataset(range(60))
    optimizer = ob.optimizers.Bayesian("exact_match", num_trials=args.trials, minibatch_size=10, num_threads=2, seed=3,
                                       storage=args.storage, study=args.study, exclusive=not args.shared)  # fmt: skip
    compiled = optimizer.compile(ob.Predict("question -> answer", lm=lm), trainset=data[:30], valset=data[30:])
    compiled.save(args.out)


if __name__ == "__main__":
    main()
