"""TSS-KD Studio in the browser: `python app.py` (or `make run`), then open http://127.0.0.1:7860.

Flags: --host (default 127.0.0.1), --port, --share (a public link: think twice with patient data),
--data-root (the only folder the browser may name paths in), --runs-dir.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from core import estimate  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.device import list_devices, pick_device  # noqa: E402
from core.errors import StudioError  # noqa: E402
from core.jobs import JobManager  # noqa: E402
from core.process import sigterm_as_ctrl_c  # noqa: E402
from ui import augment, diagnose, runs, temperatures, train  # noqa: E402
from ui.context import ASSETS, CACHE_SWEEP_S, UPLOAD_KEEP_S, ModelCache, Studio  # noqa: E402

MAX_FILE_SIZE = "200mb"  # uploads above this are refused by the server before any handler runs


def build_app(ctx: Studio) -> gr.Blocks:
    devices = [(label, value) for value, label in list_devices()]
    with gr.Blocks(title="TSS-KD Studio", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, UPLOAD_KEEP_S)) as app:
        gr.Markdown(
            "# TSS-KD Studio\nTemperature-scaling self-knowledge distillation with regional gamma "
            "augmentation (Liu et al., Neurocomputing 2025). Runs locally; nothing leaves this machine."
        )
        with gr.Tabs():
            diagnose.build(ctx)
            augment.build(ctx)
            temperatures.build(ctx, devices)
            train.build(ctx, devices)
            runs.build(ctx)
    return app


def launch_kwargs(args) -> dict:
    return dict(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=getattr(args, "max_file_size", None) or MAX_FILE_SIZE,
        run_history=False,
        auth=getattr(args, "auth", None),
        footer_links=["api"],
        ssr_mode=False,
        show_error=True,
        css_paths=[ASSETS / "studio.css"] if (ASSETS / "studio.css").is_file() else None,
        js=(ASSETS / "studio.js").read_text(),  # run on each page load: the probability bars never read 100% or 0%
    )


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on `host`:`port` (most often a studio started before), tried as the
    server will bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: a closed port's TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def port_message(host: str, port: int) -> str:
    return (
        f"error: {host}:{port} is in use: is the studio already running (http://{host}:{port})? Start this one "
        f"on another port: python app.py --port {port + 1}, or make run PORT={port + 1}."
    )


SHARE_WARNING = (
    "warning: --share publishes this studio on a public link that anyone who has it can open. "
    "Do not use it with patient data."
)


def this_machine_only(host: str) -> bool:
    """Whether `host` is a loopback address: only this machine's users can open the studio there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may stand for any address
        return False


def network_warning(host: str) -> str:
    return (
        f"warning: --host {host} lets other machines on the network open this studio, and no password is "
        "asked: set one with --auth-file FILE (user:password lines) or TSSKD_AUTH before patient data goes in."
    )


def warn_if_shared(share: bool, host: str = "127.0.0.1", auth: bool = False) -> None:
    """Say so on stderr when the studio can be opened beyond this machine without a password: a public link
    (--share, with or without one), or an address other machines reach."""
    if share:
        print(SHARE_WARNING, file=sys.stderr)
    if not auth and not this_machine_only(host):
        print(network_warning(host), file=sys.stderr)


def ready_message(host: str, port: int) -> str:
    """The line `make run` ends on once the studio answers: its address and who can open it. (Gradio's own,
    in its place, points at `share=True`: a public link is no advice for a studio of patient scans.)"""
    if host in ("0.0.0.0", "::"):  # every address: opened here at the loopback one
        where = "listening on every address of this machine: other machines open it at its address"
        return f"* TSS-KD Studio: http://127.0.0.1:{port} ({where}). Ctrl-C stops it."
    shown = f"[{host}]" if ":" in host else host
    where = "this machine only" if this_machine_only(host) else "listening on the network"
    return f"* TSS-KD Studio: http://{shown}:{port} ({where}). Ctrl-C stops it."


def read_auth(path: str | None) -> list[tuple[str, str]] | None:
    """Users from --auth-file (one user:password a line) or the TSSKD_AUTH variable (user:password,...).

    Never from the command line, where other users of the machine could read it."""
    text = Path(path).read_text() if path else os.environ.get("TSSKD_AUTH", "")
    pairs = [item.strip().split(":", 1) for item in text.replace("\n", ",").split(",") if item.strip()]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise SystemExit("error: authentication entries must look like user:password")
    return [(u, pw) for u, pw in pairs] or None


QUEUE_POLL_S = 0.02


def calm_queue(app: gr.Blocks) -> None:
    """Gradio's queue looks for work every millisecond when it has none (queueing.Queue.sleep_when_free),
    which keeps an idle studio at about 7% of a core; every 20 ms costs a request at most 20 ms and an idle
    studio next to nothing. A gradio without that attribute is left as it is."""
    queue = getattr(app, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = QUEUE_POLL_S


def private_cache() -> None:
    """Gradio keeps every upload and every image it serves in a cache folder, by default /tmp/gradio: shared by
    the machine's users, readable by them, and left behind when the server is stopped (its clean-up on exit
    does not finish in time). The studio gives gradio a folder of its own instead, readable by this user only
    (mkdtemp: mode 0700) and removed on exit. A GRADIO_TEMP_DIR the user set is used as it is."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return
    folder = tempfile.mkdtemp(prefix="tsskd-studio-cache-")
    os.environ["GRADIO_TEMP_DIR"] = folder  # read when the server starts (gradio.utils.get_upload_folder)
    atexit.register(shutil.rmtree, folder, True)


STOPPED = "* TSS-KD Studio stopped. Runs still training go on; started again, the studio follows them."


def serve_until_stopped(app) -> None:
    """Block until Ctrl-C or SIGTERM (`core.process.sigterm_as_ctrl_c`), then close the server and say so in the
    studio's words: gradio's own `block_thread` printed "Keyboard interruption in main thread" after a plain `kill`."""
    try:
        while app.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:
        app.close(verbose=False)
        print(STOPPED, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python app.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also publish a temporary public link")
    ap.add_argument("--data-root", default="data", help="the only folder whose paths the browser may use")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument(
        "--models-dir",
        default="models",
        help="folder of model files Diagnose offers beside the runs: a run's download from the Runs tab, or "
        "python -m core.export --out models/NAME.safetensors (default: models)",
    )
    ap.add_argument(
        "--runs-per-device",
        type=int,
        default=1,
        help="training runs that share one GPU (or the CPU) at a time; a temperature sweep of small runs "
        "finishes sooner with 2 to 4",
    )
    ap.add_argument(
        "--diagnose-device",
        default="cpu",
        help="where Diagnose runs the models: cpu (default), auto, cuda or cuda:N; on a GPU, ScoreCAM's lesion "
        "maps take a fraction of a second a scan instead of seconds",
    )
    ap.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="largest upload accepted, e.g. 200mb")
    ap.add_argument(
        "--auth-file",
        default=None,
        help="file of user:password lines (or set TSSKD_AUTH=user:password); off by default",
    )
    args = ap.parse_args(argv)
    mistakes = logging.StreamHandler(sys.stderr)  # a user's mistake: one line each (ui.context.user_error)
    mistakes.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("ui").addHandler(mistakes)
    logging.getLogger("ui").setLevel(logging.INFO)
    if args.runs_per_device < 1:
        ap.error("--runs-per-device must be at least 1")
    if port_taken(args.host, args.port):  # said before a minute of start-up, not as the server's traceback
        print(port_message(args.host, args.port), file=sys.stderr)
        return 2
    try:
        diagnose_device = pick_device(args.diagnose_device, flag="--diagnose-device")
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.auth = read_auth(args.auth_file)
    warn_if_shared(args.share, args.host, bool(args.auth))
    data_root = Path(args.data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    Path(args.models_dir).mkdir(parents=True, exist_ok=True)  # there to be found, as the picker names it
    private_cache()
    ctx = Studio(
        data_root=data_root.resolve(),
        runs_dir=Path(args.runs_dir).resolve(),
        jobs=JobManager(args.runs_dir, per_device=args.runs_per_device),
        auth=bool(args.auth),
        models_dir=Path(args.models_dir).resolve(),
        models=ModelCache(device=str(diagnose_device)),
    )
    app = build_app(ctx)
    if not ctx.jobs.active():  # a run adopted on restart would slow the probe and be slowed by it
        defaults = TrainConfig(runs_dir=str(ctx.runs_dir)).resolved()  # the Train form's and the sweep's
        estimate.probe_at_start(ctx.runs_dir, defaults, str(pick_device("auto")))
    app.queue(default_concurrency_limit=4)
    calm_queue(app)
    sigterm_as_ctrl_c()  # the server closes and the studio's temporary images are removed on the way out
    app.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(args))
    print(ready_message(args.host, args.port), flush=True)  # (a --share link gradio prints itself)
    serve_until_stopped(app)
    return 0


def leave(status: int) -> None:
    """Exit with `status` once the exit handlers (the temporary folders' removal) have run, without the
    interpreter's own ending: that stops the server's worker threads where they stand, and one inside torch (a
    diagnosis, the time estimate's probe) aborts the whole process ("terminate called without an active
    exception", exit status 134) after a clean Ctrl-C or SIGTERM."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    leave(main())
