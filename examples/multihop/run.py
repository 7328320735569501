"""The multi-hop example, end to end: world, index, compile, compare, save, reload in a fresh process.

    python examples/multihop/run.py all --out runs/multihop              # simulated LM (offline)
    python examples/multihop/run.py all --out runs/multihop --lm openai/gpt-4o-mini
    python examples/multihop/run.py predict runs/multihop/multihop.oobleck --data runs/multihop/test.jsonl --out preds.json

``all`` writes the synthetic world (corpus and questions), builds and saves the retrieval
index, scores the uncompiled program on the held-out questions, compiles it with
BootstrapFewShot (demos bootstrapped from a teacher's successful runs, checked on answer and
on both gold passages being retrieved), scores it again, saves it, then runs ``predict`` in a
fresh Python process on the saved artifact and checks the predictions are the same.
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
from sim_lm import sim_lm
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


def answer_and_passages(example: Any, prediction: Any, trace: Any = None) -> bool:
    """A run is a good demo when its answer is right and both gold passages were retrieved."""
    return answer_exact_match(example, prediction) and all_gold_retrieved(example, prediction, trace)


def predictions(program: ob.Module, examples: list[ob.Example]) -> list[dict[str, Any]]:
    rows = []
    for example in examples:
        prediction = program(**example.inputs())
        rows.append({"question": example.question, "answer": prediction.answer, "passages": [p.id for p in prediction.passages]})
    return rows


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
    optimizer = ob.optimizers.BootstrapFewShot(metric=answer_and_passages, max_demos=args.demos, teacher=teacher, seed=args.seed)
    compiled = optimizer.compile(program, trainset=data["train"], valset=data["dev"])
    after = evaluate_retrieval_qa(compiled, data["test"])

    artifact = compiled.save(out / "multihop.oobleck")
    expected = predictions(compiled, data["test"])
    (out / "predictions.json").write_text(json.dumps(expected, indent=1) + "\n")
    fresh = out / "predictions_fresh.json"
    command = [sys.executable, __file__, "predict", str(artifact), "--data", str(paths["test"]), "--out", str(fresh)]
    if args.lm:
        command += ["--lm", args.lm]
    subprocess.run(command, check=True)
    same = json.loads(fresh.read_text()) == expected

    results = {"retriever": args.retriever, "lm": args.lm or "simulated (examples/multihop/sim_lm.py)", "test_questions": len(data["test"]),
               "uncompiled": before, "compiled": after, "demos": {n: len(p.demos) for n, p in compiled.named_predictors()},
               "artifact": str(artifact), "fresh_process_same_predictions": same}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"held-out questions: {len(data['test'])}   retriever: {args.retriever}   LM: {results['lm']}")
    print(f"{'':12}{'answer EM':>10}{'answer F1':>10}{'recall':>8}{'all gold':>9}")
    for label, scores in (("uncompiled", before), ("compiled", after)):
        print(f"{label:12}{scores['answer_em']:>10.3f}{scores['answer_f1']:>10.3f}{scores['passage_recall']:>8.3f}{scores['all_gold_retrieved']:>9.3f}")
    print(f"saved {artifact}; reloaded in a fresh process: {'same predictions' if same else 'DIFFERENT predictions'}")
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
    everything.add_argument("--demos", type=int, default=3)
    everything.add_argument("--seed", type=int, default=0)
    predict = commands.add_parser("predict", help="load a saved program in this process and predict")
    predict.add_argument("artifact")
    predict.add_argument("--data", required=True)
    predict.add_argument("--out", required=True)
    predict.add_argument("--lm", default=None)
    args = parser.parse_args()
    run_all(args) if args.command == "all" else run_predict(args)


if __name__ == "__main__":
    main()
