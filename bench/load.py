"""Load on the studio: concurrent /diagnose calls through gradio_client against the real app on this machine.

Starts `app.py` as its own process on a free port, sends CALLS requests from CLIENTS threads, and reports
p50/p95 latency, throughput and the server's resident memory after the first 50 and after all calls (a
growing number would mean a hook or cache leak from Grad-CAM). As the baseline, the same diagnosis is
timed in-process without the server. Writes JSON (default bench/results/load-cpu.json).

    python bench/load.py --clients 16 --calls 500
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import write_result  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load-cpu.json")
    args = ap.parse_args(argv)

    from gradio_client import Client, handle_file

    from core.infer import Predictor

    scan = ROOT / "assets" / "examples" / "demo-ring.png"
    predictor = Predictor(ROOT / "assets" / "demo-model.safetensors")
    predictor.diagnose(scan, method=args.method)
    direct = []
    for _ in range(20):
        t0 = time.perf_counter()
        predictor.diagnose(scan, method=args.method)
        direct.append(time.perf_counter() - t0)

    tmp = Path(tempfile.mkdtemp(prefix="tsskd-load-"))
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "app.py",
            "--port",
            str(port),
            "--runs-dir",
            str(tmp / "runs"),
            "--data-root",
            str(tmp / "data"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                clients = [Client(url, verbose=False) for _ in range(args.clients)]
                break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the studio did not start") from None
                time.sleep(1)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        counter = iter(range(args.calls))
        rss_at_50: list[float] = []
        rss_at_half: list[float] = []

        def worker(client):
            for _ in counter:
                t0 = time.perf_counter()
                try:
                    client.predict(
                        [handle_file(str(scan))], "demo", args.method, "predicted class", 0.5, api_name="/diagnose"
                    )
                except Exception as e:  # counted, not raised: the report says how many failed
                    with lock:
                        errors.append(str(e)[:200])
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if len(latencies) == 50:
                        rss_at_50.append(rss_mb(server.pid))
                    if len(latencies) == args.calls // 2:
                        rss_at_half.append(rss_mb(server.pid))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss_end = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "clients": args.clients,
        "calls": args.calls,
        "method": args.method,
        "errors": len(errors),
        "error_samples": errors[:3],
        "server": {
            "p50_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 0.95),
            "throughput_per_s": args.calls / wall,
        },
        "baseline_in_process": {"p50_s": statistics.median(direct), "p95_s": percentile(direct, 0.95)},
        "rss_mb_after_50": rss_at_50[0] if rss_at_50 else None,
        "rss_mb_after_half": rss_at_half[0] if rss_at_half else None,
        "rss_mb_after_all": rss_end,
    }
    if result["rss_mb_after_50"]:
        result["rss_growth"] = rss_end / result["rss_mb_after_50"] - 1
    write_result(args.out, result)
    s, b = result["server"], result["baseline_in_process"]
    print(
        f"{args.calls} calls from {args.clients} clients: {len(errors)} failed; "
        f"p50 {s['p50_s']:.2f} s, p95 {s['p95_s']:.2f} s, {s['throughput_per_s']:.1f} calls/s; "
        f"in-process p50 {b['p50_s']:.3f} s; RSS {rss_end:.0f} MB after {args.calls} calls"
        + (f" ({100 * result['rss_growth']:+.1f}% since call 50)" if "rss_growth" in result else "")
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
