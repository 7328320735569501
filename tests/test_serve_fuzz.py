"""Property: no request, valid or not, gets a 500 from a served program or the OpenAI endpoint.

Bodies are generated with hypothesis from the *served* OpenAPI spec (``from_schema`` below turns
the JSON Schema subset pydantic writes into a strategy), then mutated (a field dropped, an
extra field, a value replaced by arbitrary JSON) or replaced by arbitrary JSON or bytes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_support import EchoHF

import oobleck as ob
from oobleck.serve import BackgroundServer, create_app
from oobleck.testing import FieldScriptedLM

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], derandomize=True)


def _respond(inputs: dict[str, str]) -> dict[str, Any]:
    """Well-typed outputs for any inputs, so every failure seen is the server's."""
    first = next(iter(inputs.values()), "")
    return {"label": "bug", "keywords": [first[:5]], "score": float(len(first)), "answer": first or "-"}


class Pipeline(ob.Module):
    """A user Module: untyped and typed forward parameters, two steps."""

    def __init__(self) -> None:
        lm = FieldScriptedLM(_respond)
        self.first = ob.Predict("text -> answer", lm=lm)
        self.second = ob.Predict("text, hint -> answer", lm=lm)

    def forward(self, text: str, hint, repeat: int = 1) -> ob.Prediction:
        answer = self.first(text=text).answer
        return self.second(text=answer * max(0, min(repeat, 3)), hint=json.dumps(hint))


@pytest.fixture(scope="module")
def server():
    lm = FieldScriptedLM(_respond)
    typed = ob.Predict(
        "items: list[str], limits: dict[str, int], flag: bool, ratio: float, maybe: Optional[int], mode: Literal['a', 'b'] -> answer",
        lm=lm,
    )
    classify = ob.Predict("ticket: str, priority: int -> label: Literal['bug', 'question'], keywords: list[str], score: float", lm=lm)
    with BackgroundServer(create_app({"typed": typed, "classify": classify, "pipeline": Pipeline(), "chat": ob.Predict("q -> answer", lm=EchoHF())})) as running:
        spec = httpx.get(running.url + "/openapi.json").json()
        yield running, spec


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid for ``schema``: types, enums, anyOf, $ref, objects and arrays with their bounds."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return from_schema(target, root)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    if "anyOf" in schema:
        return st.one_of([from_schema(option, root) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=max(schema.get("minLength", 0), 30))
    if kind == "integer":
        low = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else None)
        high = schema.get("maximum", schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else None)
        return st.integers(low, high)
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return st.floats(low, schema.get("maximum"), allow_nan=False, allow_infinity=False, exclude_min="exclusiveMinimum" in schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}), root) if schema.get("items") else JSON
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=max(schema.get("minItems", 0), 4))
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = {k: from_schema(v, root) for k, v in properties.items() if k in required}
        optional = {k: from_schema(v, root) for k, v in properties.items() if k not in required}
        values = from_schema(schema["additionalProperties"], root) if isinstance(schema.get("additionalProperties"), dict) else JSON
        base = st.fixed_dictionaries(fixed, optional=optional)
        if properties or schema.get("additionalProperties") is False:
            return base
        return st.dictionaries(st.text(max_size=8), values, max_size=3)
    return JSON


def _request_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**ref, "components": spec["components"]}  # refs resolve against the served document


@pytest.mark.parametrize("program", ["typed", "classify", "pipeline"])
def test_valid_generated_bodies_are_answered(server, program: str) -> None:
    """Every body drawn from a program's request schema is answered (which also checks the generator)."""
    running, spec = server
    schema = _request_schema(spec, f"/programs/{program}")
    with httpx.Client(base_url=running.url, timeout=30) as client:

        @settings(FUZZ, max_examples=60)
        @given(body=from_schema(schema))
        def run(body: Any) -> None:
            response = client.post(f"/programs/{program}", json=body)
            assert response.status_code == 200, response.text

        run()


def _bodies(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    valid = from_schema(schema)

    @st.composite
    def mutated(draw: st.DrawFn) -> Any:
        body = draw(valid)
        if not isinstance(body, dict) or not body:
            return body
        key = draw(st.sampled_from(sorted(body)))
        kind = draw(st.sampled_from(["drop", "extra", "replace"]))
        changed = dict(body)
        if kind == "drop":
            del changed[key]
        elif kind == "extra":
            changed[draw(st.text(min_size=1, max_size=6))] = draw(JSON)
        else:
            changed[key] = draw(JSON)
        return changed

    return st.one_of(valid, mutated(), JSON)


def _check(response: httpx.Response, allowed: set[int]) -> None:
    assert response.status_code in allowed, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n")
        return
    payload = response.json()
    if response.status_code >= 400:
        assert payload["request_id"] == response.headers["x-request-id"]
        assert "Traceback" not in response.text


@pytest.mark.parametrize("program", ["typed", "classify", "pipeline"])
def test_generated_inputs_never_get_a_500(server, program: str) -> None:
    running, spec = server
    schema = _request_schema(spec, f"/programs/{program}")
    outputs = {"typed": {"answer"}, "classify": {"label", "keywords", "score"}, "pipeline": {"answer"}}[program]
    seen: set[int] = set()

    with httpx.Client(base_url=running.url, timeout=30) as client:

        @FUZZ
        @given(body=_bodies(schema))
        def run(body: Any) -> None:
            response = client.post(f"/programs/{program}", json=body)
            _check(response, {200, 422})
            seen.add(response.status_code)
            if response.status_code == 200:
                assert set(response.json()) >= outputs

        run()

        @FUZZ
        @given(raw=st.binary(max_size=40))
        def run_raw(raw: bytes) -> None:
            _check(client.post(f"/programs/{program}", content=raw, headers={"content-type": "application/json"}), {200, 422})

        run_raw()
    assert seen == {200, 422}  # the generator reached both valid and invalid inputs


def test_generated_chat_requests_never_get_a_500(server) -> None:
    running, spec = server
    schema = _request_schema(spec, "/v1/chat/completions")
    seen: set[int] = set()
    with httpx.Client(base_url=running.url, timeout=30) as client:

        @FUZZ
        @given(body=_bodies(schema), served_model=st.booleans())
        def run(body: Any, served_model: bool) -> None:
            if served_model and isinstance(body, dict):
                body = {**body, "model": "chat"}  # most generated model names are not served
            response = client.post("/v1/chat/completions", json=body)
            _check(response, {200, 400, 404})
            seen.add(response.status_code)

        run()
    assert seen == {200, 400, 404}
