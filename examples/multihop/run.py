"""The multi-hop example, end to end: world, index, compile, compare, save, reload in a fresh process.

    python examples/multihop/run.py all --out runs/multihop              # simulated LM (offline)
    python examples/multihop/run.py all --out runs/multihop --optimizers bootstrap,bayesian,auto --budget 2000
    python examples/multihop/run.py all --out runs/multihop --lm openai/gpt-4o-mini
    python examples/multihop/run.py predict runs/multihop/multihop-bayesian.oobleck --data runs/multihop/test.jsonl --out preds.json

``all`` writes the synthetic world (corpus and questions), builds and saves the retrieval
index, scores the uncompiled program on the held-out questions, then compiles it with each
optimizer asked for: ``bootstrap`` (BootstrapFewShot: demos bootstrapped from a teacher's
successful runs, checked on the answer and on both gold passages being retrieved),
``bayesian`` (a joint search over instructions, from a small pool written here, and demo sets,
within an LM-call budget) and ``auto`` (what ``ob.optimizers.auto`` picks for this data and
budget). Each compiled program is scored on the held-out questions, saved, and loaded by
``predict`` in a fresh Python process, whose predictions must be the same.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from program import MultiHop
from sim_lm import STUDENT_ID, sim_lm
from world import make_world, write_world

import oobleck as ob
from oobleck.evaluate.metrics import all_gold_retrieved, answer_exact_match
from oobleck.evaluate.retrieval_qa import evaluate_retrieval_qa


def _lms(lm_id: str | None) -> tuple[ob.BaseLM, ob.BaseLM]:
    """(student, teacher): the simulated pair, or one real LM for both."""
    if lm_id:
        lm = ob.LM(lm_id)
        return lm, lm
    return sim_lm(), sim_lm(strong=True)


def build_retriever(kind: str, corpus: Path, folder: Path) -> ob.retrieval.Retriever:
    if kind == "bm25":
        retriever = ob.retrieval.BM25(corpus)
    elif kind == "dense":
        retriever = ob.retrieval.Dense(corpus)
    else:
        retriever = ob.retrieval.Hybrid(corpus=corpus)
    retriever.save(folder)
    return retriever


# Instructions a user might try, for the Bayesian search to choose from (with demo sets), per
# predictor. Each step's first candidate is the signature's own instruction.
INSTRUCTIONS = {
    **{f"generate_query.{hop}": [
        ("Search for one name at a time: first the person the question names, then the company or city the notes say they "
         "work for or were born in."),
        "Write a detailed search query that covers everything the question asks about.",
    ] for hop in range(2)},
    "answer": [
        "Give the answer alone, a name or a place, not a sentence.",
        "Answer in a full sentence that explains how the notes lead to the answer.",
    ],
}  # fmt: skip

OPTIMIZERS = ("bootstrap", "bayesian", "auto")


def answer_and_passages(example: Any, prediction: Any, trace: Any = None) -> bool:
    """A run is a good demo when its answer is right and both gold passages were retrieved."""
    return answer_exact_match(example, prediction) and all_gold_retrieved(example, prediction, trace)


def predictions(program: ob.Module, examples: list[ob.Example]) -> list[dict[str, Any]]:
    rows = []
    for example in examples:
        prediction = program(**example.inputs())
        rows.append({"question": example.question, "answer": prediction.answer, "passages": [p.id for p in prediction.passages]})
    return rows


def make_optimizer(name: str, args: argparse.Namespace, teacher: ob.Module, data: dict[str, list[ob.Example]]) -> ob.optimizers.Optimizer:
    budget = ob.Budget(max_lm_calls=args.budget)
    if name == "bootstrap":
        return ob.optimizers.BootstrapFewShot(metric=answer_and_passages, max_demos=args.demos, teacher=teacher, seed=args.seed)
    if name == "bayesian":
        # num_instructions=1: no proposals asked of an LM, only the pool above (the simulated LM has no ideas to offer).
        return ob.optimizers.Bayesian(answer_and_passages, num_trials=args.trials, num_instructions=1, instructions=INSTRUCTIONS,
                                      num_demo_sets=4, max_demos=args.demos, minibatch_size=len(data["dev"]), budget=budget,
                                      num_threads=4, seed=args.seed)  # fmt: skip
    return ob.optimizers.auto(answer_and_passages, trainset_size=len(data["train"]), devset_size=len(data["dev"]), budget=budget,
                              max_demos=args.demos, num_threads=4, seed=args.seed)  # fmt: skip


def fresh_process_predictions(artifact: Path, test_path: Path, out: Path, lm_id: str | None) -> list[dict[str, Any]]:
    command = [sys.executable, __file__, "predict", str(artifact), "--data", str(test_path), "--out", str(out)]
    if lm_id:
        command += ["--lm", lm_id]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    paths = write_world(make_world(args.seed), out)
    data = {split: ob.load_examples(paths[split], inputs="question") for split in ("train", "dev", "test")}
    retriever = build_retriever(args.retriever, paths["corpus"], out / f"{args.retriever}.index")
    student_lm, teacher_lm = _lms(args.lm)

    program = MultiHop(retriever=retriever)
    program.set_lm(student_lm)
    before = evaluate_retrieval_qa(program, data["test"])
    teacher = MultiHop(retriever=retriever)
    teacher.set_lm(teacher_lm)

    results: dict[str, Any] = {"retriever": args.retriever, "lm": args.lm or f"{STUDENT_ID} (examples/multihop/sim_lm.py)",
                               "test_questions": len(data["test"]), "uncompiled": before, "compiled": {}}  # fmt: skip
    for name in args.optimizers:
        optimizer = make_optimizer(name, args, teacher, data)
        with ob.track_usage() as usage:
            compiled = optimizer.compile(program, trainset=data["train"], valset=data["dev"])
        after = evaluate_retrieval_qa(compiled, data["test"])
        artifact = compiled.save(out / f"multihop-{name}.oobleck")
        expected = predictions(compiled, data["test"])
        (out / f"predictions-{name}.json").write_text(json.dumps(expected, indent=1) + "\n")
        fresh = fresh_process_predictions(artifact, paths["test"], out / f"predictions-{name}-fresh.json", args.lm)
        info = compiled.compile_info or {}
        results["compiled"][name] = {
            "optimizer": info.get("optimizer") or type(optimizer).__name__, "scores": after, "compile_lm_calls": usage.calls,
            "chosen": (info.get("scores") or {}).get("chosen"),
            "instructions": {n: p.signature.instructions for n, p in compiled.named_predictors()},
            "demos": {n: len(p.demos) for n, p in compiled.named_predictors()},
            "artifact": str(artifact), "fresh_process_same_predictions": fresh == expected,
        }  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"held-out questions: {len(data['test'])}   retriever: {args.retriever}   LM: {results['lm']}")
    print(f"{'':30}{'answer EM':>10}{'answer F1':>10}{'recall':>8}{'all gold':>9}{'LM calls':>10}  reloaded in a fresh process")
    rows = [("uncompiled", before, None, None)]
    rows += [(f"{name} ({r['optimizer']})", r["scores"], r["compile_lm_calls"], r["fresh_process_same_predictions"])
             for name, r in results["compiled"].items()]  # fmt: skip
    for label, scores, calls, same in rows:
        tail = "" if same is None else ("same predictions" if same else "DIFFERENT predictions")
        print(f"{label:30}{scores['answer_em']:>10.3f}{scores['answer_f1']:>10.3f}{scores['passage_recall']:>8.3f}"
              f"{scores['all_gold_retrieved']:>9.3f}{'' if calls is None else calls:>10}  {tail}")  # fmt: skip
    return results


def run_predict(args: argparse.Namespace) -> None:
    student_lm, _ = _lms(args.lm)
    program = ob.load(args.artifact, program=MultiHop(), lm=student_lm)  # the retriever comes back from the artifact
    rows = predictions(program, ob.load_examples(args.data, inputs="question"))
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    everything = commands.add_parser("all", help="world, index, compile, compare, save, reload")
    everything.add_argument("--out", default="runs/multihop")
    everything.add_argument("--retriever", choices=["bm25", "dense", "hybrid"], default="bm25")
    everything.add_argument("--lm", default=None, help="an LM id for student and teacher (default: the simulated pair)")
    everything.add_argument("--optimizers", type=lambda v: [o for o in v.split(",") if o], default=["bootstrap", "bayesian"],
                            help=f"comma-separated, of {', '.join(OPTIMIZERS)} (default: bootstrap,bayesian)")  # fmt: skip
    everything.add_argument("--budget", type=int, default=2000, help="LM calls a bayesian or auto compile may make")
    everything.add_argument("--trials", type=int, default=24, help="Bayesian trials")
    everything.add_argument("--demos", type=int, default=3)
    everything.add_argument("--seed", type=int, default=0)
    predict = commands.add_parser("predict", help="load a saved program in this process and predict")
    predict.add_argument("artifact")
    predict.add_argument("--data", required=True)
    predict.add_argument("--out", required=True)
    predict.add_argument("--lm", default=None)
    args = parser.parse_args()
    if args.command == "all" and not set(args.optimizers) <= set(OPTIMIZERS):
        parser.error(f"--optimizers takes {', '.join(OPTIMIZERS)}, not {args.optimizers}")
    run_all(args) if args.command == "all" else run_predict(args)


if __name__ == "__main__":
    main()
