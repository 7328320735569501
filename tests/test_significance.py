"""The paired bootstrap interval of a held-out gain, and pairing two evaluations."""

from __future__ import annotations

import json
import random

import pytest
from support import doubling_dataset, doubling_respond

import oobleck as ob
from oobleck.errors import ConfigurationError, DataError
from oobleck.evaluate import Evaluate, GainInterval, paired_bootstrap, significance
from oobleck.evaluate.metrics import exact_match
from oobleck.evaluate.significance import compare
from oobleck.testing import FieldScriptedLM


def test_identical_scores_give_zero_gain_and_are_not_significant() -> None:
    scores = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5] * 10
    gain = paired_bootstrap(scores, list(scores))
    assert (gain.baseline, gain.compiled, gain.gain) == (pytest.approx(0.5833333), pytest.approx(0.5833333), 0.0)
    assert (gain.low, gain.high) == (0.0, 0.0)
    assert gain.p_value == 1.0  # every resample shows a gain <= 0
    assert gain.n == 60 and gain.confidence == 0.95
    assert not gain.significant
    assert gain.describe() == "+0.0 points (95% CI +0.0 to +0.0, n=60): not significant: the interval includes 0"


def test_a_large_consistent_gain_is_significant() -> None:
    # The compiled program fixes 60 of the baseline's 70 failures and breaks nothing.
    baseline = [1.0] * 30 + [0.0] * 70
    compiled = [1.0] * 30 + [1.0] * 60 + [0.0] * 10
    gain = paired_bootstrap(baseline, compiled)
    assert gain.gain == pytest.approx(0.6)
    assert 0.45 < gain.low < 0.6 < gain.high < 0.75
    assert gain.significant and gain.p_value == 0.0
    assert gain.describe().startswith("+60.0 points (95% CI +")
    assert gain.describe().endswith(", n=100): significant")


def test_known_answer_on_two_examples() -> None:
    # Differences [0, 1]: a resample's mean gain is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4.
    gain = paired_bootstrap([0.0, 0.0], [0.0, 1.0], resamples=20_000, seed=3)
    assert gain.gain == 0.5
    assert (gain.low, gain.high) == (0.0, 1.0)
    assert gain.p_value == pytest.approx(0.25, abs=0.015)
    assert not gain.significant


def test_a_constant_difference_has_a_zero_width_interval() -> None:
    gain = paired_bootstrap([0.2, 0.4, 0.6], [0.3, 0.5, 0.7])
    assert gain.low == pytest.approx(0.1) and gain.high == pytest.approx(0.1) and gain.significant


def test_the_interval_contains_the_true_gain_on_a_synthetic_case() -> None:
    rng = random.Random(7)
    n = 400
    baseline = [float(rng.random() < 0.5) for _ in range(n)]
    compiled = [float(rng.random() < 0.62) for _ in range(n)]  # independent, true gain 0.12
    gain = paired_bootstrap(baseline, compiled)
    assert gain.low < 0.12 < gain.high
    assert gain.high - gain.low < 0.16  # about 2 * 1.96 * sqrt(0.49/400): not vacuously wide


def test_coverage_is_close_to_the_confidence_level() -> None:
    # 200 synthetic held-out sets with a known true gain of 0.1: about 95% of the intervals hold it.
    rng = random.Random(11)
    hits = 0
    for trial in range(200):
        baseline = [float(rng.random() < 0.6) for _ in range(100)]
        compiled = [b if rng.random() < 0.75 else float(rng.random() < 0.7) for b in baseline]  # correlated pairs, E[gain] = 0.025
        true_gain = 0.25 * (0.7 - 0.6)
        gain = paired_bootstrap(baseline, compiled, resamples=1_000, seed=trial)
        hits += gain.low <= true_gain <= gain.high
    assert 0.88 <= hits / 200 <= 0.99


def test_seeded_runs_are_identical_and_seeds_matter() -> None:
    rng = random.Random(1)
    baseline = [rng.random() for _ in range(50)]
    compiled = [min(1.0, b + rng.uniform(-0.1, 0.2)) for b in baseline]
    first = paired_bootstrap(baseline, compiled, seed=5)
    assert paired_bootstrap(baseline, compiled, seed=5) == first
    other = paired_bootstrap(baseline, compiled, seed=6)
    assert (other.low, other.high) != (first.low, first.high)
    assert other.gain == first.gain  # the point estimate does not depend on the resampling


def test_the_result_does_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2)
    baseline = [float(rng.random() < 0.4) for _ in range(300)]
    compiled = [float(rng.random() < 0.5) for _ in range(300)]
    whole = paired_bootstrap(baseline, compiled, resamples=500)
    monkeypatch.setattr(significance, "_CHUNK_CELLS", 700)  # two resamples per chunk
    assert paired_bootstrap(baseline, compiled, resamples=500) == whole


def test_confidence_level_widens_the_interval() -> None:
    rng = random.Random(3)
    baseline = [rng.random() for _ in range(80)]
    compiled = [rng.random() for _ in range(80)]
    narrow = paired_bootstrap(baseline, compiled, confidence=0.8)
    wide = paired_bootstrap(baseline, compiled, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high
    assert wide.describe().split("(")[1].startswith("99% CI")


def test_a_significant_loss_says_so() -> None:
    gain = paired_bootstrap([1.0] * 40, [1.0] * 10 + [0.0] * 30)
    assert gain.high < 0 and not gain.significant
    assert gain.describe().startswith("-75.0 points")
    assert gain.describe().endswith("not significant: the compiled program scores lower (the whole interval is below 0)")


def test_describe_scale_for_scores_on_a_hundred_point_scale() -> None:
    gain = paired_bootstrap([40.0, 50.0, 60.0], [52.0, 62.0, 72.0])
    assert gain.describe(scale=1).startswith("+12.0 points (95% CI +12.0 to +12.0, n=3)")


def test_to_dict_is_json_ready_and_round_trips() -> None:
    gain = paired_bootstrap([0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], resamples=200, seed=9)
    data = json.loads(json.dumps(gain.to_dict()))
    assert data["significant"] is gain.significant
    assert data["resamples"] == 200 and data["seed"] == 9 and data["n"] == 4
    assert GainInterval.from_dict(data) == gain
    with pytest.raises(DataError, match="not a gain interval"):
        GainInterval.from_dict({"gain": 0.1})


@pytest.mark.parametrize(
    ("baseline", "compiled", "message"),
    [
        ([1.0, 0.0], [1.0], "baseline has 2 scores, compiled has 1"),
        ([], [], "at least one example"),
        ([0.5, float("nan")], [0.5, 0.5], "baseline score 1 is nan"),
        ([0.5], ["high"], "compiled scores must be numbers"),
    ],
)
def test_bad_score_lists_raise_data_errors(baseline: list, compiled: list, message: str) -> None:
    with pytest.raises(DataError, match=message):
        paired_bootstrap(baseline, compiled)


def test_bad_settings_raise_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="confidence"):
        paired_bootstrap([1.0], [1.0], confidence=95)
    with pytest.raises(ConfigurationError, match="resamples"):
        paired_bootstrap([1.0], [1.0], resamples=0)


def _evaluate(respond, devset):  # type: ignore[no-untyped-def]
    program = ob.Predict("question -> answer", lm=FieldScriptedLM(respond))
    return Evaluate(devset=devset, metric=exact_match, num_threads=2, display_progress=False)(program)


def test_compare_pairs_two_evaluations_by_devset_position() -> None:
    devset = doubling_dataset(list(range(40)))
    baseline = _evaluate(doubling_respond, devset)  # right on even numbers only

    def better(inputs):  # type: ignore[no-untyped-def]
        return {"answer": str(int(inputs["question"].split()[-1]) * 2)}

    compiled = _evaluate(better, devset)
    gain = compare(baseline, compiled, resamples=2_000)
    assert (gain.baseline, gain.compiled, gain.gain, gain.n) == (0.5, 1.0, 0.5, 40)
    assert gain.significant
    assert compare(baseline, compiled, resamples=2_000) == paired_bootstrap(baseline.scores, compiled.scores, resamples=2_000)


def test_compare_refuses_evaluations_of_different_examples() -> None:
    first = _evaluate(doubling_respond, doubling_dataset([0, 1, 2]))
    with pytest.raises(DataError, match="baseline has 3 results, compiled has 2"):
        compare(first, _evaluate(doubling_respond, doubling_dataset([0, 1])))
    with pytest.raises(DataError, match="disagree at devset position 1"):
        compare(first, _evaluate(doubling_respond, doubling_dataset([0, 5, 2])))
