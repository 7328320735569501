"""`oobleck serve` as a user runs it: a child process on a loopback port, driven over real HTTP.

The programs' LMs are real servers too: ``OpenAITestServer`` (an OpenAI-compatible HTTP server
in this process) and, for the integration test, the bundled ``hf/oobleck-tiny`` model loaded
by the serving process itself.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serve_support import ROOT, ServeProcess
from support import Hop

import oobleck as ob
from oobleck.testing.server import OpenAITestServer


def _save(program: ob.Module, path: Path) -> Path:
    program.save(path)
    return path


@pytest.fixture(scope="module")
def lm_servers():
    """A healthy LM server with a little latency and one that refuses every request (HTTP 400)."""
    with OpenAITestServer(latency=0.02) as healthy, OpenAITestServer(fault_rate=1.0, fault_kinds=(400,)) as broken:
        yield healthy, broken


@pytest.mark.slow
def test_oobleck_serve_programs_over_http(tmp_path: Path, lm_servers) -> None:
    healthy, broken = lm_servers
    echo = _save(ob.Predict("question -> answer", lm=ob.LM("openai/test-model", base_url=healthy.base_url + "/v1")), tmp_path / "echo.oobleck")
    down = _save(ob.Predict("question -> answer", lm=ob.LM("openai/test-model", base_url=broken.base_url + "/v1")), tmp_path / "qa.oobleck")
    hop = _save(_hop(healthy), tmp_path / "hop.oobleck")
    args = (str(echo), f"down={down}", str(hop), "--program", "hop=tests/support.py:Hop")
    with ServeProcess(*args, env={"OOBLECK_CACHE": "0"}) as server:
        listing = httpx.get(server.url + "/programs").json()["programs"]
        assert [p["name"] for p in listing] == ["echo", "down", "hop"]
        assert listing[2]["predictors"] == ["generate_query", "answer"]

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=64), timeout=30) as client:
                return list(await asyncio.gather(*(client.post("/programs/echo", json={"question": f"question {i}"}) for i in range(64))))

        before = healthy.requests
        responses = asyncio.run(burst())
        assert [r.status_code for r in responses] == [200] * 64
        assert [r.json() for r in responses] == [{"answer": f"question {i}"} for i in range(64)]
        assert healthy.requests - before == 64

        multi = httpx.post(server.url + "/programs/hop", json={"question": "why?"})
        assert multi.status_code == 200 and multi.json()["answer"] == "why?"

        failed = httpx.post(server.url + "/programs/down", json={"question": "x"})
        assert failed.status_code == 502
        rid = failed.json()["request_id"]
        assert failed.headers["x-request-id"] == rid and "HTTP 400" in failed.json()["error"]["message"]
        assert "Traceback" not in failed.text

        invalid = httpx.post(server.url + "/programs/echo", json={"query": "x"})
        assert invalid.status_code == 422 and "field 'question'" in invalid.json()["error"]["message"]
        metrics = httpx.get(server.url + "/metrics").text
        assert 'oobleck_lm_calls_total{program="echo",via="program"} 64' in metrics
        assert 'oobleck_lm_calls_total{program="hop",via="program"} 2' in metrics
        assert rid in server.stderr()  # the id finds the failure in the server's log


def _hop(lm_server: OpenAITestServer) -> ob.Module:
    hop = Hop()
    hop.set_lm(ob.LM("openai/test-model", base_url=lm_server.base_url + "/v1"))
    return hop


@pytest.mark.slow
def test_serve_refuses_bad_arguments_with_a_message(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "oobleck.cli", "serve", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)

    missing = serve(str(tmp_path / "nothing.oobleck"))
    assert missing.returncode == 2 and "nothing.oobleck" in missing.stderr and "Traceback" not in missing.stderr
    one = _save(ob.Predict("question -> answer", lm=ob.LM("openai/test-model", base_url="http://127.0.0.1:9/v1")), tmp_path / "one.oobleck")
    twice = serve(str(one), f"one={one}")
    assert twice.returncode == 2 and "two programs are named 'one'" in twice.stderr
    stray = serve(str(one), "--program", "other=tests/support.py:Hop")
    assert stray.returncode == 2 and "['other']" in stray.stderr
    unloadable = _save(ob.Predict("word -> letter", lm=ob.LM("hf/no-such-model-here")), tmp_path / "bad.oobleck")
    model = serve(str(unloadable), "--port", "0")
    assert model.returncode == 2 and "no-such-model-here" in model.stderr and "Traceback" not in model.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_openai_client_against_the_demo_model_served_by_oobleck_serve(tmp_path: Path) -> None:
    """The official openai client, sync, streaming and 64 concurrent, against hf/oobleck-tiny."""
    import openai

    artifact = _save(ob.Predict("word -> answer", lm=ob.LM("hf/oobleck-tiny"), demos=[{"word": "apple", "answer": "a"}]),
                     tmp_path / "first.oobleck")  # fmt: skip
    with ServeProcess(str(artifact), env={"OMP_NUM_THREADS": "1"}) as server:  # one torch thread: steady on a busy machine
        program = httpx.post(server.url + "/programs/first", json={"word": "planet"})
        assert program.status_code == 200 and isinstance(program.json()["answer"], str)

        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["first"]
        prompts = [f"word: {w}\nanswer:" for w in ("planet", "river", "stone", "cloud")]
        expected = {}
        for prompt in prompts:
            reply = client.chat.completions.create(model="first", messages=[{"role": "user", "content": prompt}], max_tokens=8, temperature=0)
            assert reply.usage.prompt_tokens > len(prompt) // 2 and 0 < reply.usage.completion_tokens <= 8
            expected[prompt] = reply.choices[0].message.content
        assert len(set(expected.values())) > 1  # the prompts are told apart

        stream = client.chat.completions.create(model="first", messages=[{"role": "user", "content": prompts[0]}], max_tokens=8, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected[prompts[0]]

        async def burst() -> list[tuple[str, str]]:
            aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
            asked = [prompts[i % len(prompts)] for i in range(64)]
            replies = await asyncio.gather(*(aclient.chat.completions.create(model="first", messages=[{"role": "user", "content": p}],
                                                                              max_tokens=8, temperature=0) for p in asked))  # fmt: skip
            await aclient.close()
            return [(p, r.choices[0].message.content) for p, r in zip(asked, replies)]

        answered = asyncio.run(burst())
        assert len(answered) == 64
        assert all(text == expected[prompt] for prompt, text in answered)  # batched greedy == one at a time, each to its request
        metrics = httpx.get(server.url + "/metrics").text
        assert 'oobleck_lm_calls_total{program="first",via="openai"} 69' in metrics  # 4 + 1 streamed + 64


@pytest.mark.slow
def test_oobleck_serve_with_two_worker_processes(tmp_path: Path, lm_servers) -> None:
    healthy, _ = lm_servers
    echo = _save(ob.Predict("question -> answer", lm=ob.LM("openai/test-model", base_url=healthy.base_url + "/v1")), tmp_path / "echo.oobleck")
    with ServeProcess(str(echo), "--workers", "2", env={"OOBLECK_CACHE": "0"}) as server:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=32), timeout=60) as client:
                return list(await asyncio.gather(*(client.post("/programs/echo", json={"question": f"w{i}"}) for i in range(32))))

        responses = asyncio.run(burst())
        assert [r.json() for r in responses] == [{"answer": f"w{i}"} for i in range(32)]
        assert server.proc is not None
        if Path("/proc").is_dir():  # Linux: count the supervisor's worker processes
            children = [p for p in Path("/proc").glob("[0-9]*/stat") if _parent(p) == server.proc.pid]
            assert len(children) >= 2


def _parent(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
