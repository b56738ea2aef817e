"""What the tee gateway costs a user: added latency, time to first token, throughput; side by side.

    .venv/bin/python bench/bench_gateway.py [--requests 400] [--duration 8] [--concurrency 32]

Three processes on this machine: a vLLM-like upstream (tests/fixtures/vllm_like.py: instant
answers, 2 ms per streamed token), the real ``misuse-monitor gateway`` teeing every exchange into
a real local Kafka broker, and this load generator (a minimal keep-alive HTTP/1.1 client, so the
client costs little CPU). Every measurement runs direct and through the gateway in the same
invocation, interleaved, so the difference is the gateway's and not the machine's mood:

1. non-streaming chat completions, one at a time: p50/p95 latency, direct vs proxied;
2. streaming chat completions, one at a time: time to the first content token, direct vs proxied;
3. non-streaming requests/s with ``--concurrency`` connections for ``--duration`` s, direct vs proxied;
4. (1) again through a second gateway with pre-screening on (rules detector): its added cost.
At the end the gateway's own counters must show every exchange delivered to Kafka.
Targets (issue 13): p50 added < 2 ms, TTFT difference < 5 ms, >= 500 requests/s through the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.localinfra.base import free_port  # noqa: E402
from pipeline.localinfra.kafka import create_topic, start_broker  # noqa: E402

console = Console()
CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Summarise the meeting notes in two lines."}],
                   "max_tokens": 64}).encode()  # fmt: skip
STREAM_BODY = json.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True},
                          "messages": [{"role": "user", "content": "Tell me a short story about a lighthouse."}]}).encode()  # fmt: skip
FIRST_TOKEN = re.compile(rb'"content": "[^"]')


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {proc.stderr.read()[-2000:]}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout_s}s")


def _post(conn: http.client.HTTPConnection, body: bytes, stream: bool = False) -> tuple[float, float | None]:
    """(total seconds, seconds to the first content token or None)."""
    started = time.perf_counter()
    conn.request("POST", CHAT, body, {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"})
    resp = conn.getresponse()
    first = None
    if stream:
        seen = b""
        while chunk := resp.read1(65536):
            if first is None:
                seen += chunk
                if FIRST_TOKEN.search(seen):
                    first = time.perf_counter() - started
    else:
        resp.read()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}")
    return time.perf_counter() - started, first


def sequential(ports: dict[str, int], n: int, stream: bool) -> dict[str, list[float]]:
    """Alternate the targets request by request; returns per-target latencies (or TTFTs)."""
    conns = {name: http.client.HTTPConnection("127.0.0.1", port) for name, port in ports.items()}
    out: dict[str, list[float]] = {name: [] for name in ports}
    for i in range(n + 20):
        for name, conn in conns.items():
            total, first = _post(conn, STREAM_BODY if stream else BODY, stream)
            if i >= 20:  # warm-up: connections, caches, the gateway's producer
                out[name].append(first if stream else total)
    for conn in conns.values():
        conn.close()
    return out


async def _load(port: int, concurrency: int, duration_s: float) -> int:
    """Requests completed by ``concurrency`` keep-alive connections in ``duration_s``."""
    request = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY  # fmt: skip
    deadline = time.perf_counter() + duration_s
    done = 0

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:200])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def throughput(port: int, concurrency: int, duration_s: float) -> float:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_load(port, concurrency, duration_s)) / duration_s


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def _counter(metrics: str, name: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and not line.startswith(name + "_created"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per target")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka")
        try:
            topic = "bench.gateway"
            create_topic(broker.bootstrap, topic, 3)
            up, gw, gw_screen = free_port(), free_port(), free_port()
            procs.append(_spawn([sys.executable, "-m", "tests.fixtures.vllm_like", "--port", str(up),
                                 "--token-delay-s", "0.002"]))  # fmt: skip
            _wait_http(f"http://127.0.0.1:{up}/health", procs[-1])
            for port, screen in ((gw, "--no-prescreen"), (gw_screen, "--prescreen")):
                env = {"MM_GATEWAY__SPILL_PATH": f"{tmp}/spill-{port}.jsonl", "MM_GATEWAY__PRESCREEN__BLOCK_AT": "critical"}
                procs.append(_spawn([sys.executable, "-m", "pipeline.cli", "gateway", "--upstream",
                                     f"http://127.0.0.1:{up}", "--port", str(port), "--bootstrap", broker.bootstrap,
                                     "--topic", topic, screen], env))  # fmt: skip
                _wait_http(f"http://127.0.0.1:{port}/healthz", procs[-1])

            ports = {"direct": up, "gateway": gw}
            lat = sequential(ports, args.requests, stream=False)
            ttft = sequential(ports, args.requests // 2, stream=True)
            rps = {name: throughput(port, args.concurrency, args.duration) for name, port in ports.items()}
            screened = sequential({"direct": up, "gateway+prescreen": gw_screen}, args.requests, stream=False)

            time.sleep(2)  # let the tee deliver the tail
            metrics = httpx.get(f"http://127.0.0.1:{gw}/metrics").text
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            broker.stop()

    ms = 1000.0
    table = Table(title=f"gateway vs direct ({os.cpu_count()} cores; upstream, gateway, Kafka and client on one machine)")
    for col in ("measurement", "direct", "through gateway", "difference", "target"):
        table.add_column(col, justify="right" if col != "measurement" else "left")
    p50d, p50g = _pct(lat["direct"], 50) * ms, _pct(lat["gateway"], 50) * ms
    table.add_row("non-streaming latency p50 (ms)", f"{p50d:.2f}", f"{p50g:.2f}", f"+{p50g - p50d:.2f}", "< +2 ms")
    p95d, p95g = _pct(lat["direct"], 95) * ms, _pct(lat["gateway"], 95) * ms
    table.add_row("non-streaming latency p95 (ms)", f"{p95d:.2f}", f"{p95g:.2f}", f"+{p95g - p95d:.2f}", "")
    t50d, t50g = _pct(ttft["direct"], 50) * ms, _pct(ttft["gateway"], 50) * ms
    table.add_row("streaming time to first token p50 (ms)", f"{t50d:.2f}", f"{t50g:.2f}", f"+{t50g - t50d:.2f}", "< +5 ms")
    table.add_row(f"requests/s, {args.concurrency} connections", f"{rps['direct']:.0f}", f"{rps['gateway']:.0f}",
                  f"x{rps['gateway'] / rps['direct']:.2f}", ">= 500 through")  # fmt: skip
    s50d, s50g = _pct(screened["direct"], 50) * ms, _pct(screened["gateway+prescreen"], 50) * ms
    table.add_row("with pre-screening (rules) p50 (ms)", f"{s50d:.2f}", f"{s50g:.2f}", f"+{s50g - s50d:.2f}", "")
    console.print(table)
    enqueued, delivered = _counter(metrics, "mm_gateway_logs_enqueued_total"), _counter(metrics, "mm_gateway_logs_delivered_total")
    dropped, spilled = _counter(metrics, "mm_gateway_logs_dropped_total"), _counter(metrics, "mm_gateway_logs_spilled_total")
    console.print(f"tee: {enqueued:.0f} exchanges queued, {delivered:.0f} records delivered to Kafka, "
                  f"{spilled:.0f} spilled, {dropped:.0f} dropped")  # fmt: skip


if __name__ == "__main__":
    main()
