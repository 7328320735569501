"""Load generator for benchmarks/serve.py: closed-loop HTTP/1.1 clients on raw asyncio sockets.

Each of ``--concurrency`` keep-alive connections posts ``{"question": "<unique id>"}`` to the
program, waits for the answer, checks that it echoes its own question (so no response is lost
or swapped) and posts the next, for ``--seconds``. A raw socket client costs a few tens of
microseconds per request, so the measurement is of the server, not of the client. Prints one
JSON line: requests, errors, mismatches, wall time, latencies (ms) and this process's CPU time.

    python benchmarks/_serve_load.py --url http://127.0.0.1:8000/programs/echo --concurrency 16 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from urllib.parse import urlsplit


async def _connection(host: str, port: int, path: str, tag: str, counter: itertools.count, stop_at: float,
                      latencies: list[float], failures: dict[str, int]) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            question = f"{tag}-{next(counter)}"
            body = json.dumps({"question": question}).encode()
            head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            started = time.perf_counter()
            writer.write(head.encode() + body)
            raw_head = await reader.readuntil(b"\r\n\r\n")
            status = int(raw_head.split(b" ", 2)[1])
            length = 0
            for line in raw_head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                failures["errors"] += 1
            elif json.loads(payload).get("answer") != question:
                failures["mismatches"] += 1
    finally:
        writer.close()


async def run(url: str, concurrency: int, seconds: float, tag: str) -> dict[str, object]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    latencies: list[float] = []
    failures = {"errors": 0, "mismatches": 0}
    counter = itertools.count()
    cpu = time.process_time()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_connection(host, port, path, f"{tag}-{c}", counter, stop_at, latencies, failures) for c in range(concurrency)))
    wall = time.perf_counter() - started
    return {"requests": len(latencies), "wall_s": wall, "latencies_ms": [round(x * 1000, 3) for x in latencies],
            "client_cpu_s": time.process_time() - cpu, **failures}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tag", default="q")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (less CPU per request), where it is installed")
    args = parser.parse_args()
    if args.uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    print(json.dumps(asyncio.run(run(args.url, args.concurrency, args.seconds, args.tag))), flush=True)


if __name__ == "__main__":
    main()
