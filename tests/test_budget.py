"""Spending limits: calls capped to the call, tokens and cost, cache hits charged, nesting."""

from __future__ import annotations

import contextvars
import threading

import pytest

import oobleck as ob
from oobleck.lm.budget import PRICES, price_of
from oobleck.lm.cache import ResponseCache
from oobleck.testing import ScriptedLM

MESSAGES = [{"role": "user", "content": "x" * 400}]


def test_call_cap_is_exact_and_refused_call_is_not_sent():
    lm = ScriptedLM(lambda m, s: "y" * 40)
    with ob.spending(ob.Budget(max_lm_calls=3)) as spend:
        for _ in range(3):
            lm(MESSAGES)
        with pytest.raises(ob.BudgetExceeded, match="max_lm_calls 3") as info:
            lm(MESSAGES)
    assert info.value.limit == "max_lm_calls"
    assert len(lm.calls) == 3 and spend.calls == 3 and spend.billed_calls == 3
    assert spend.prompt_tokens == 300 and spend.completion_tokens == 30


def test_call_cap_holds_under_threads():
    lm = ScriptedLM(lambda m, s: "ok")
    refused = []

    def worker():
        for _ in range(20):
            try:
                lm(MESSAGES)
            except ob.BudgetExceeded:
                refused.append(1)

    with ob.spending(ob.Budget(max_lm_calls=37)) as spend:
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(lm.calls) == 37 == spend.calls
    assert len(refused) == 8 * 20 - 37


def test_token_and_cost_caps():
    lm = ScriptedLM(lambda m, s: "y" * 400, model="gpt-4o-mini")
    with ob.spending(ob.Budget(max_tokens=250)) as spend:
        lm(MESSAGES)  # 100 + 100 tokens
        lm(MESSAGES)  # 400 spent after this one: the cap is checked before a call
        with pytest.raises(ob.BudgetExceeded, match="max_tokens"):
            lm(MESSAGES)
    assert spend.calls == 2
    ob.set_price("scripted/priced", 1000.0, 1000.0)  # $0.001 per token
    try:
        priced = ScriptedLM(lambda m, s: "y" * 400, model="priced")
        with ob.spending(ob.Budget(max_cost=0.15)) as spend:
            priced(MESSAGES)
            with pytest.raises(ob.BudgetExceeded, match="max_cost"):
                priced(MESSAGES)
        assert spend.cost == pytest.approx(0.2) and spend.calls == 1
    finally:
        PRICES.pop("scripted/priced")


def test_cache_hits_are_charged_but_not_billed(tmp_path):
    lm = ScriptedLM(lambda m, s: "y" * 40, cache=ResponseCache(tmp_path / "cache.sqlite"))
    with ob.spending() as first:
        lm(MESSAGES)
    with ob.spending() as second:
        lm(MESSAGES)
    assert len(lm.calls) == 1
    assert first.to_dict() | {"billed_calls": 0} == second.to_dict()
    assert second.billed_calls == 0


def test_nested_scopes_and_refusal_leaves_counts_unchanged():
    lm = ScriptedLM(lambda m, s: "ok")
    with ob.spending(ob.Budget(max_lm_calls=2)) as outer, ob.spending() as inner:
        lm(MESSAGES)
        lm(MESSAGES)
        with pytest.raises(ob.BudgetExceeded):
            lm(MESSAGES)
    assert outer.calls == inner.calls == 2


def test_failed_call_is_released():
    def boom(messages, settings):
        raise ValueError("backend bug")

    lm = ScriptedLM(boom)
    with ob.spending(ob.Budget(max_lm_calls=1)) as spend, pytest.raises(ob.LMError):
        lm(MESSAGES)
    assert spend.calls == 0


def test_budget_validation_and_prices():
    with pytest.raises(ob.ConfigurationError, match="max_lm_calls"):
        ob.Budget(max_lm_calls=-1)
    assert price_of("openai/gpt-4o-mini") == PRICES["gpt-4o-mini"]
    assert price_of("hf/oobleck-tiny") == (0.0, 0.0)
    assert price_of("openai/unknown-model") is None


def test_evaluate_stops_on_budget_instead_of_scoring_failures():
    lm = ScriptedLM(lambda m, s: "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    program = ob.Predict("question -> answer", lm=lm)
    dev = [ob.Example(question=str(i), answer="ok").with_inputs("question") for i in range(10)]
    with ob.spending(ob.Budget(max_lm_calls=4)), pytest.raises(ob.BudgetExceeded):
        ob.Evaluate(devset=dev, metric="exact_match", num_threads=1, display_progress=False)(program)
    assert len(lm.calls) == 4
