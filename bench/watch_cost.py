"""What an open page costs the studio: the server's CPU while a real browser tab (headless chromium) watches a
finished run in the Train tab, against the same server with no page open, each over the same time.

The page's timers poll the runs folder every few seconds; nothing is sent or redrawn when nothing changed,
so a watching tab should cost the server about what an idle one does. Writes JSON (default
bench/results/watch-cost-cpu.json).

    python bench/watch_cost.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import CHROMIUM, CHROMIUM_ARGS, RESULTS, cpu_seconds, start_studio, write_result  # noqa: E402


def share_of_a_core(pid: int, seconds: float) -> float:
    start, t0 = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--out", type=Path, default=RESULTS / "watch-cost-cpu.json")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from core.config import DataConfig, TrainConfig
    from core.train import run_training

    tmp = Path(tempfile.mkdtemp(prefix="tsskd-watch-"))  # removed below, with the studio's runs
    data = DataConfig(image_size=16, synthetic_train=256, synthetic_val=64, synthetic_test=64)
    run = run_training(TrainConfig(data=data, method="ce", epochs=2, device="cpu", runs_dir=str(tmp / "runs")))
    server, url = start_studio(tmp / "runs", tmp / "data")
    try:
        time.sleep(5)
        idle = share_of_a_core(server.pid, args.seconds)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}?run={run.name}")
            page.get_by_role("tab", name="Train").click()
            page.locator("#train-progress").get_by_text(run.name).wait_for(timeout=60_000)
            time.sleep(5)  # past the page's first loads
            watching = share_of_a_core(server.pid, args.seconds)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": args.seconds,
        "server_cpu_share_of_a_core": {"no_page": idle, "one_tab_watching_a_finished_run": watching},
    }
    write_result(args.out, result)
    print(f"server CPU: {100 * idle:.1f}% of a core with no page, {100 * watching:.1f}% with one tab watching")
    return 0


if __name__ == "__main__":
    sys.exit(main())
