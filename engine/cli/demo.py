"""``roilab demo`` (model, sample log, default pilot, then the dashboard) and ``roilab
dashboard`` (Streamlit, on this machine only unless a password is set)."""
from __future__ import annotations

import argparse
import subprocess
import sys

from engine.cli.models import cmd_prepare_model
from engine.cli.pilot import add_executor_args, foreground_pilot
from engine.cli.pilot_spec import add_pilot_args
from engine.cli.workloads import ingest_log
from engine.core.inert import terminal_safe
from engine.core.logfile import terminal_stdio
from engine.core.settings import REPO_ROOT, Settings

DEMO_SAMPLE = "support_chat.jsonl"


def _dashboard_host(args, settings: Settings) -> str:
    """--host, else ROILAB_DASHBOARD_HOST (127.0.0.1); refused beyond this machine without
    ROILAB_DASHBOARD_PASSWORD (engine.core.dashboard_access)."""
    from engine.core.dashboard_access import check_exposure, configured_password

    host = args.host or settings.dashboard_host
    check_exposure(host, configured_password(settings.dashboard_password))
    return host


def cmd_dashboard(args, settings: Settings) -> None:
    host = _dashboard_host(args, settings)
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app" / "main.py"),
           "--server.port", str(args.port), "--server.address", host,
           "--server.headless", "true"]
    shown = f"[{host}]" if ":" in host else host
    print(f"Dashboard: http://{terminal_safe(shown)}:{args.port}  (Ctrl+C to stop)", flush=True)
    # Streamlit's own lines stay on the terminal, as they did before library output had a log.
    subprocess.run(cmd, cwd=REPO_ROOT, check=False, **terminal_stdio())


def _check_priced(args, settings: Settings) -> None:
    """Refuse a pilot nothing prices (no --hardware, no --price, an undetected device) before
    the work, not at step 3; the pilot itself says what it is priced as."""
    from engine.pilot.detect import detect_hardware, unpriced

    if args.hardware is None and args.price is None and not args.spec:
        from engine.cli.common import open_store

        detected = detect_hardware(args.device, open_store(settings).hardware_catalog())
        if detected.key is None:
            raise unpriced(detected)


def cmd_demo(args, settings: Settings) -> None:
    if not args.no_dashboard:  # refuse an exposed dashboard before the work, not after
        _dashboard_host(args, settings)
    _check_priced(args, settings)
    print("1/4 Preparing the embedded model (SmolLM2-135M-Instruct)")
    args.model = settings.default_model
    cmd_prepare_model(args, settings)
    print(f"2/4 Ingesting the bundled sample log {DEMO_SAMPLE}")
    args.log, args.name = str(settings.samples_dir / DEMO_SAMPLE), "support chat (sample)"
    args.workload = ingest_log(args, settings)
    print("3/4 Running the default pilot: baseline, int8 weights, LLMLingua")
    args.name = "default pilot"
    foreground_pilot(args, settings)  # a Ray task on the local head unless --in-process
    if args.no_dashboard:
        return
    print("4/4 Starting the dashboard")
    cmd_dashboard(args, settings)


def _host_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None,
                   help="address the dashboard listens on (default ROILAB_DASHBOARD_HOST or "
                        "127.0.0.1: this machine only); any other address needs "
                        "ROILAB_DASHBOARD_PASSWORD")


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="prepare model, ingest sample, run default pilot, dashboard")
    add_pilot_args(p, max_requests=12)
    add_executor_args(p, detach=False)
    p.add_argument("--port", type=int, default=8501)
    _host_arg(p)
    p.add_argument("--no-dashboard", action="store_true")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("dashboard", help="start the Streamlit dashboard")
    p.add_argument("--port", type=int, default=8501)
    _host_arg(p)
    p.set_defaults(func=cmd_dashboard)
