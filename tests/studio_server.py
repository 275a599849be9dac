"""Start the real studio on a free local port for API and browser tests."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from app import build_app, launch_kwargs
from core.jobs import JobManager
from ui.context import Studio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: Path, *, max_file_size: str | None = None, auth: list[tuple[str, str]] | None = None):
    """Launch the app in this process (a background thread). Returns (url, app, ctx)."""
    data_root, runs_dir = tmp / "data", tmp / "runs"
    data_root.mkdir(parents=True, exist_ok=True)
    ctx = Studio(
        data_root=data_root.resolve(),
        runs_dir=runs_dir.resolve(),
        jobs=JobManager(runs_dir, grace_s=5),
        auth=bool(auth),
        models_dir=(tmp / "models").resolve(),
    )
    app = build_app(ctx)
    app.queue(default_concurrency_limit=4)
    args = argparse.Namespace(host="127.0.0.1", port=free_port(), share=False, max_file_size=max_file_size, auth=auth)
    app.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(args))
    return app.local_url, app, ctx
