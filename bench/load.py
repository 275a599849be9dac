"""Load on the studio: concurrent /diagnose calls through gradio_client against the real app on this machine.

Starts `app.py` as its own process on a free port, sends CALLS requests from CLIENTS threads, and reports
p50/p95 latency, throughput and the server's resident memory after the first 50 and after all calls (a
growing number would mean a hook or cache leak from Grad-CAM). Three kinds of client, one after the other:
`download` fetches every image /diagnose returns (gradio_client's default: four files per call), `json`
reads the answers and leaves the images on the server (`download_files=False`), and `http` makes the
same three requests a script or PACS bridge would (upload, call, read the event stream) with one kept-alive
HTTP connection per client and no gradio_client. The clients run on the same machine as the server, so on
a small CPU they take part of its cores: each mode reports the CPU time per call of the server and of the
clients. As the baseline, the same
diagnosis is timed in-process without the server, one call after another. Writes JSON (default
bench/results/load-cpu.json).

    python bench/load.py --clients 16 --calls 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cpu_seconds, rss_mb, start_studio, write_result  # noqa: E402
from ui.diagnose import PREDICTED  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--modes", default="download,json,http", help="kinds of client, run one after the other")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load-cpu.json")
    args = ap.parse_args(argv)

    from core.infer import Predictor

    scan = ROOT / "assets" / "examples" / "demo-ring.png"
    predictor = Predictor(ROOT / "assets" / "demo-model.safetensors")
    predictor.diagnose(scan, method=args.method)
    direct = []
    for _ in range(20):
        t0 = time.perf_counter()
        predictor.diagnose(scan, method=args.method)
        direct.append(time.perf_counter() - t0)

    tmp = Path(tempfile.mkdtemp(prefix="tsskd-load-"))  # removed below, with the studio's runs
    server, url = start_studio(tmp / "runs", tmp / "data")
    modes = {}
    try:
        for mode in args.modes.split(","):
            if mode not in ("download", "json", "http"):
                raise SystemExit(f"unknown mode {mode!r}: choose from download, json, http")
            modes[mode] = load(url, server, scan, args, mode=mode)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    b = {"p50_s": statistics.median(direct), "p95_s": percentile(direct, 0.95)}
    b["throughput_per_s"] = 1 / b["p50_s"]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "clients": args.clients,
        "calls": args.calls,
        "method": args.method,
        "modes": modes,
        "baseline_in_process": b,
    }
    write_result(args.out, result)
    for mode, m in modes.items():
        s = m["server"]
        print(
            f"{mode}: {args.calls} calls from {args.clients} clients, {m['errors']} failed; p50 {s['p50_s']:.2f} s, "
            f"p95 {s['p95_s']:.2f} s, {s['throughput_per_s']:.1f} calls/s; RSS {m['rss_mb_after_all']:.0f} MB "
            + (f"({100 * m['rss_growth']:+.1f}% since call 50)" if m["rss_growth"] is not None else "")
            + "; CPU per call: server "
            f"{m['cpu_ms_per_call']['server']:.0f} ms, clients {m['cpu_ms_per_call']['clients']:.0f} ms"
        )
    print(f"in process, one after another: p50 {b['p50_s']:.3f} s, {b['throughput_per_s']:.1f} calls/s")
    return 0 if not any(m["errors"] for m in modes.values()) else 1


class HttpClient:
    """/diagnose over the plain REST API: upload the scan, start the call, read its event stream."""

    def __init__(self, url: str, method: str):
        import httpx

        self.url, self.method = url + "gradio_api/", method
        self.http = httpx.Client(timeout=120)
        # one session per client, as gradio_client keeps: without it the server builds a new session's
        # state for every call
        self.session = uuid.uuid4().hex

    def predict(self, scan: Path) -> list:
        up = self.http.post(self.url + "upload", files=[("files", (scan.name, scan.read_bytes(), "image/png"))])
        up.raise_for_status()
        files = [{"path": path, "meta": {"_type": "gradio.FileData"}} for path in up.json()]
        data = [files, "demo", self.method, PREDICTED, 0.5]
        call = self.http.post(self.url + "call/diagnose", json={"data": data, "session_hash": self.session})
        call.raise_for_status()
        event = None
        with self.http.stream("GET", self.url + "call/diagnose/" + call.json()["event_id"]) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(line[6:])
                    return json.loads(line[6:])
        raise RuntimeError(f"the stream ended without an answer (last event {event})")


def load(url: str, server: subprocess.Popen, scan: Path, args, *, mode: str) -> dict:
    """CALLS diagnoses from CLIENTS threads, each with its own client of the kind MODE names."""
    from gradio_client import Client, handle_file

    deadline = time.time() + 120
    while True:
        try:
            if mode == "http":
                clients = [HttpClient(url, args.method) for _ in range(args.clients)]
                break
            options = {} if mode == "download" else {"download_files": False}
            clients = [Client(url, verbose=False, **options) for _ in range(args.clients)]
            break
        except Exception:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the studio did not start") from None
            time.sleep(1)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(args.calls))
    rss_by_call: dict[int, float] = {}  # the server's memory every 50 calls: flat after warm-up, or a leak

    def worker(client):
        for _ in counter:
            t0 = time.perf_counter()
            try:
                if mode == "http":
                    client.predict(scan)
                else:
                    client.predict([handle_file(str(scan))], method=args.method, api_name="/diagnose")
            except Exception as e:  # counted, not raised: the report says how many failed
                with lock:
                    errors.append(str(e)[:200])
            with lock:
                latencies.append(time.perf_counter() - t0)
                if len(latencies) % 50 == 0:
                    rss_by_call[len(latencies)] = rss_mb(server.pid)

    t0, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server.pid), time.process_time()
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rss_end = rss_mb(server.pid)
    server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
    return {
        # CPU time per call: where the machine's cores went, the server's or the clients'
        "cpu_ms_per_call": {"server": 1000 * server_cpu / args.calls, "clients": 1000 * client_cpu / args.calls},
        "errors": len(errors),
        "error_samples": errors[:3],
        "server": {
            "p50_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 0.95),
            "throughput_per_s": args.calls / wall,
        },
        "rss_mb_by_call": {str(k): round(v, 1) for k, v in rss_by_call.items()},
        "rss_mb_after_50": rss_by_call.get(50),
        "rss_mb_after_all": rss_end,
        "rss_growth": rss_end / rss_by_call[50] - 1 if 50 in rss_by_call else None,
    }


if __name__ == "__main__":
    sys.exit(main())
