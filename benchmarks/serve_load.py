"""Load on the web server: concurrent clients on localhost posting canvas PNGs to serve.py.

    python benchmarks/serve_load.py                          # best.pt of runs/default; 8 clients, 400 requests
    python benchmarks/serve_load.py --checkpoint PATH --clients 16 --requests 2000

Starts serve.py as a user would, warms it up, then measures requests per second, latency (p50, p99),
errors, and the server's resident memory after the first 100 measured requests and at the end. The
bodies are the ten PNGs in benchmarks/canvas/: what the page itself sent (200x200 RGBA, 3-6 KB) when
Chromium drew strokes.py's digits on it with the mouse, as tests/test_web.py does.
"""

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import checkpoints  # noqa: E402
import cli  # noqa: E402
import runtime  # noqa: E402

WARMUP_REQUESTS = 40
CANVAS_DIR = Path(__file__).resolve().parent / "canvas"


def canvas_pngs():
    return [path.read_bytes() for path in sorted(CANVAS_DIR.glob("*.png"))]


def start_server(path):
    # Its stderr is read only if it fails to start; when stopped, it says so there, which is no news here.
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--checkpoint", str(path), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
    except BaseException:  # stopped while it starts: it must not go on serving, orphaned
        process.kill()
        raise
    if " at http://" not in line:
        process.kill()
        said = process.communicate()[1].strip().splitlines()
        sys.exit(f"error: serve.py did not start ({said[-1] if said else line.strip() or 'no output'})")
    host, port = line.split(" at http://")[1].split()[0].rsplit(":", 1)
    return process, host, int(port)


def resident_mb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def post(reader, writer, body):
    """One POST over a kept-alive connection; returns the status code (the body is read and dropped)."""
    writer.write(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def load(host, port, bodies, clients, requests, on_request):
    """`clients` connections share `requests` POSTs; returns (latencies in s, statuses, wall seconds)."""
    latencies, statuses, counter = [], [], iter(range(requests))

    async def client():
        reader, writer = await asyncio.open_connection(host, port)
        for i in counter:
            started = time.perf_counter()
            statuses.append(await post(reader, writer, bodies[i % len(bodies)]))
            latencies.append(time.perf_counter() - started)
            on_request(len(latencies))
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, statuses, time.perf_counter() - started


def run_client(coroutine):
    """Run the clients on uvloop where it is installed (uvicorn[standard] brings it): the load generator
    shares the machine with the server, so the less of it the client takes, the truer the figures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def percentile(values, q):
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main():
    p = cli.Parser(__doc__)
    cli.add_checkpoint_options(p, "serve")
    p.add_argument("--clients", type=cli.positive(int), default=8, help="concurrent connections (default: 8)")
    p.add_argument("--requests", type=cli.positive(int), default=400, help="measured requests in all (default: 400)")
    args = p.parse_args()
    if args.requests < 2:
        p.error(f"--requests must be at least 2 (the latency percentiles need two), got {args.requests}")
    path = cli.checkpoint_path(args)
    try:
        checkpoints.load(path)  # here, so that a wrong file is said once, not as a server that did not start
    except cli.RunError as e:
        sys.exit(f"error: {e}")

    bodies = canvas_pngs()
    process, host, port = start_server(path)
    try:
        run_client(load(host, port, bodies, args.clients, WARMUP_REQUESTS, lambda n: None))
        memory = {}

        first = min(100, args.requests)

        def on_request(n):
            if n == first:
                memory["first_100"] = resident_mb(process.pid)

        latencies, statuses, seconds = run_client(load(host, port, bodies, args.clients, args.requests,
                                                        on_request))
        memory["end"], memory["peak"] = resident_mb(process.pid), resident_mb(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.communicate(timeout=30)

    errors = sum(status != 200 for status in statuses)
    print(f"\n{runtime.cpu_name()}, {os.cpu_count()} cores")
    print(f"{args.requests} requests from {args.clients} clients to serve.py ({path}), "
          f"{len(bodies)} different {len(bodies[0]) // 1024}-KB canvas PNGs\n")
    rows = [("requests per second", f"{args.requests / seconds:.0f}", "goal >= 500"),
            ("latency p50", f"{percentile(latencies, 50) * 1000:.1f} ms", ""),
            ("latency p99", f"{percentile(latencies, 99) * 1000:.1f} ms", "goal < 25 ms"),
            ("errors", f"{errors}", "goal 0"),
            ("server memory", f"{memory['first_100']:.0f} MB after {first}, {memory['end']:.0f} MB at the end",
             f"peak {memory['peak']:.0f} MB; goal: flat")]
    for name, value, note in rows:
        print(f"{name:<22}{value:<44}{note}")


if __name__ == "__main__":
    cli.run(main)
