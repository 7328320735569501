"""Prometheus text-format metrics: requests, latency histogram, LM usage, errors.

Hand-written (version 0.0.4 of the text exposition format) so serving needs no client
library: a few counters and one histogram behind a lock, rendered on each scrape. Labels are
bounded: endpoints are route templates or program names, never raw paths.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["BUCKETS", "CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last slot is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


class Metrics:
    """Counters a server updates per request and renders for ``GET /metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)  # (method, endpoint, status)
        self.latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self.in_flight = 0
        self.usage: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # (program, via): calls, prompt, completion, cache hits
        self.errors: dict[tuple[str, str], int] = defaultdict(int)  # (endpoint, type)

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(method, endpoint, str(status))] += 1
            self.latency[endpoint].observe(seconds)

    def lm_usage(self, program: str, calls: int, prompt_tokens: int, completion_tokens: int, cache_hits: int, *, via: str = "program") -> None:
        """LM usage of one request: ``via`` is ``program`` (``POST /programs/...``) or ``openai`` (``/v1``)."""
        with self._lock:
            row = self.usage[(program, via)]
            row[0] += calls
            row[1] += prompt_tokens
            row[2] += completion_tokens
            row[3] += cache_hits

    def error(self, endpoint: str, kind: str) -> None:
        with self._lock:
            self.errors[(endpoint, kind)] += 1

    def render(self, extra: Iterable[str] = ()) -> str:
        """The exposition text; ``extra`` lines (already formatted) are appended."""
        with self._lock:
            requests = dict(self.requests)
            latency = {k: (list(h.counts), h.total, h.count) for k, h in self.latency.items()}
            in_flight = self.in_flight
            usage = {k: list(v) for k, v in self.usage.items()}
            errors = dict(self.errors)
        out: list[str] = []

        def header(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        header("oobleck_requests_total", "counter", "HTTP requests answered, by method, endpoint and status.")
        for (method, endpoint, status), n in sorted(requests.items()):
            out.append(f"oobleck_requests_total{_labels([('method', method), ('endpoint', endpoint), ('status', status)])} {n}")
        header("oobleck_request_duration_seconds", "histogram", "Time from request to the end of the response, by endpoint.")
        for endpoint, (counts, total, count) in sorted(latency.items()):
            cumulative = 0
            for bound, n in zip([*BUCKETS, float("inf")], counts):
                cumulative += n
                le = "+Inf" if bound == float("inf") else _number(bound)
                out.append(f"oobleck_request_duration_seconds_bucket{_labels([('endpoint', endpoint), ('le', le)])} {cumulative}")
            out.append(f"oobleck_request_duration_seconds_sum{_labels([('endpoint', endpoint)])} {_number(total)}")
            out.append(f"oobleck_request_duration_seconds_count{_labels([('endpoint', endpoint)])} {count}")
        header("oobleck_requests_in_flight", "gauge", "Requests being answered now.")
        out.append(f"oobleck_requests_in_flight {in_flight}")
        names = (("calls", "LM calls made (cache hits excluded)"), ("prompt_tokens", "prompt tokens sent to LMs"),
                 ("completion_tokens", "completion tokens received from LMs"), ("cache_hits", "LM calls answered from the cache"))  # fmt: skip
        for i, (name, text) in enumerate(names):
            metric = f"oobleck_lm_{name}_total"
            header(metric, "counter", f"{text[:1].upper()}{text[1:]}, by served program and route (program or openai).")
            for (program, via), row in sorted(usage.items()):
                out.append(f"{metric}{_labels([('program', program), ('via', via)])} {row[i]}")
        header("oobleck_errors_total", "counter", "Failed requests, by endpoint and error type.")
        for (endpoint, kind), n in sorted(errors.items()):
            out.append(f"oobleck_errors_total{_labels([('endpoint', endpoint), ('type', kind)])} {n}")
        out.extend(extra)
        return "\n".join(out) + "\n"

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data, for tests and logs."""
        with self._lock:
            return {"requests": dict(self.requests), "usage": {k: list(v) for k, v in self.usage.items()}, "errors": dict(self.errors)}
