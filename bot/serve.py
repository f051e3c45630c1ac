"""Starts the whole system and stops it cleanly: ``python -m bot.serve`` (what ``make run`` does).

It starts the action server, the Rasa server (HTTP API enabled, loopback only unless
``--interface`` says otherwise, token auth) and
the handoff gateway (``python -m handoff`` in the gateway's environment; customers connect to it,
never to Rasa), waits until each answers, prints where to go, and on Ctrl-C or SIGTERM stops every
process it started, children included (each runs in its own process group). A process that
crashes meanwhile is started again with back-off while the others keep running
(:mod:`bot.keeper`, docs/supervision.md).

It is also the supervisor of deploys: the gateway asks its control API (:mod:`bot.control`,
on the same interface, the Rasa token) to retrain and to start a second Rasa server on a new
model, switches to it, and has the old one stopped (docs/deploys.md). The live model is
remembered in ``var/live-model`` for the next start. With gateway nodes on other machines,
``--interface`` is a private interface of this one and ``--advertised-host`` the name they
call it by (docs/deploy.md, "Rasa servers on a machine of their own").

The processes themselves are :mod:`bot.processes`' (standard library only, so the test suite,
on Python 3.11, starts the very same ones with :class:`~bot.processes.Stack`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from bot.control import RasaPool, Retrainer, serve_control
from bot.keeper import Keeper
from bot.processes import (  # re-exported: the tests and benchmarks start the same Stack
    GATEWAY_PYTHON,
    LIVE_MODEL,
    LOOPBACK,
    PROJECT_ROOT,
    TOKEN_FILE,
    Service,
    Stack,
    StartupError,
    advertised_host,
    http_url,
    latest_model,
    model_in_service,
    reach,
)

__all__ = ["GATEWAY_PYTHON", "Service", "Stack", "StartupError", "latest_model", "main",
           "model_in_service"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rasa-port", type=int, default=int(os.environ.get("RASA_PORT", 5005)))
    parser.add_argument("--standby-port", type=int,
                        help="the second Rasa server's port in a deploy (default: Rasa's + 1)")
    parser.add_argument("--control-port", type=int,
                        default=int(os.environ.get("CONTROL_PORT", 5004)),
                        help="the deploy and retrain API for the gateway (bot/control.py)")
    parser.add_argument("--actions-port", type=int,
                        default=int(os.environ.get("ACTIONS_PORT", 5055)))
    parser.add_argument("--interface", default=os.environ.get("RASA_INTERFACE", LOOPBACK),
                        help="the interface the Rasa servers and the control API listen on "
                             "(default: the loopback, $RASA_INTERFACE): a private one when "
                             "gateway nodes on other machines call them (docs/deploy.md)")
    parser.add_argument("--advertised-host", default=os.environ.get("RASA_ADVERTISED_HOST", ""),
                        help="the host in the Rasa servers' URLs the control API hands to the "
                             "gateway nodes (default: the interface, $RASA_ADVERTISED_HOST); "
                             "needed when the interface is 0.0.0.0")
    parser.add_argument("--model", type=Path,
                        help="model file (default: the one live when last stopped, else the "
                             "newest in models/)")
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT,
                        help="the Rasa project to serve and retrain (default: this one)")
    parser.add_argument("--endpoints", type=Path)
    parser.add_argument("--gateway-port", type=int,
                        default=int(os.environ.get("HANDOFF_PORT", 8000)))
    parser.add_argument("--prove-in-process", action="store_true",
                        help="a retraining loads the models it checks in its own process "
                             "instead of proving its model on the standby Rasa server, which "
                             "then stays up for the deploy (slower: docs/deploys.md)")
    parser.add_argument("--restart-delay", type=float, default=1.0,
                        help="seconds before a crashed process is started again; doubled after "
                             "each crash (docs/supervision.md)")
    parser.add_argument("--restart-max-delay", type=float, default=30.0,
                        help="the longest wait before a restart")
    args = parser.parse_args(argv)
    try:
        advertised_host(args.interface, args.advertised_host)
    except ValueError as exc:
        parser.error(str(exc))

    project = args.project.resolve()
    var_dir = project / "var"
    stack = Stack(
        rasa_bin=Path(sys.executable).parent / "rasa",
        model=Path(),
        rasa_port=args.rasa_port,
        actions_port=args.actions_port,
        endpoints=args.endpoints or project / "endpoints.yml",
        credentials=project / "credentials.yml",
        log_dir=var_dir / "log",
        project=project,
        interface=args.interface,
        advertised=args.advertised_host,
    )
    pool = RasaPool(stack, (args.rasa_port, args.standby_port or args.rasa_port + 1),
                    project / "models", project / LIVE_MODEL)
    try:
        stack.model = (args.model or model_in_service(project)).resolve()
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 1

    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print(f"starting the action server on :{args.actions_port} and Rasa on :{args.rasa_port} "
          f"with {stack.model.name} (logs in {stack.log_dir})", flush=True)
    try:
        stack.start()
    except StartupError as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return 1
    pool.adopt(stack.services.pop(), args.rasa_port, stack.model)  # the pool runs Rasa now
    control_url = http_url(reach(args.interface), args.control_port)  # this machine's way in
    retrainer = Retrainer(pool, project, control_url, stack.token,
                          on_standby=not args.prove_in_process)
    keeper = Keeper(delay=args.restart_delay, max_delay=args.restart_max_delay)
    control = serve_control(pool, retrainer, args.control_port, stack.token, keeper,
                            host=args.interface)
    gateway = Service(
        name="handoff gateway",
        argv=[str(GATEWAY_PYTHON), "-m", "handoff"],
        ready_url=f"http://127.0.0.1:{args.gateway_port}/api/health",
        log_path=stack.log_dir / "gateway.log",
        env={"HANDOFF_PORT": str(args.gateway_port), "HANDOFF_RASA_URL": stack.rasa_url,
             "HANDOFF_RASA_TOKEN": stack.token,
             "HANDOFF_SUPERVISOR_URL": control_url},
    )
    gateway_log_start = gateway.log_path.stat().st_size if gateway.log_path.exists() else 0
    gateway.start()
    stack.services.append(gateway)
    actions = stack.services[0]
    keeper.watch("action server", lambda: actions)
    keeper.watch("Rasa server", lambda: pool.live.service if pool.live else None)
    keeper.watch("handoff gateway", lambda: gateway)
    try:
        gateway.wait_until_ready(time.monotonic() + 60)
    except StartupError as exc:
        print(f"the gateway did not start: {exc}", file=sys.stderr)
        control.shutdown()
        pool.stop()
        stack.stop()
        return 1
    with open(gateway.log_path, "rb") as log:  # the first admin's password, shown once
        log.seek(gateway_log_start)
        for line in log.read().decode(errors="replace").splitlines():
            if line.startswith("Created the first user"):
                print(line, flush=True)
    print(
        "\nThe system is up.\n"
        f"  The shop, with the chat widget:  http://localhost:{args.gateway_port}/\n"
        f"  The agent console (log in):     http://localhost:{args.gateway_port}/console\n"
        f"  Handoff gateway: http://localhost:{args.gateway_port}\n"
        "    customers: Socket.IO at /socket.io, Rasa's socketio protocol\n"
        "    agents: JSON API under /api (POST /api/login; OpenAPI at /api/openapi.json),\n"
        "    live updates and actions on Socket.IO /agent\n"
        f"  Rasa HTTP API (on {args.interface}, token in "
        f"{TOKEN_FILE.relative_to(PROJECT_ROOT)}):\n"
        f"    {stack.rasa_url}/status?token=$(cat var/rasa-token)\n"
        f"  Deploys (the gateway's): control API on {control_url}, "
        f"Rasa servers on :{pool.ports[0]} and :{pool.ports[1]}\n"
        "  Talk to it through Rasa's REST channel:\n"
        f"    curl -s {stack.rasa_url}/webhooks/rest/webhook "
        "-d '{\"sender\": \"me\", \"message\": \"where is my order 100002?\"}'\n"
        "Press Ctrl-C to stop everything.",
        flush=True,
    )
    while not stopping:
        keeper.tick()  # a crashed process is restarted with back-off; the others keep running
        time.sleep(0.5)
    print("stopping…", flush=True)
    if retrainer.stop() is not None:
        print("a retraining was interrupted; its corrections still wait in the gateway",
              flush=True)
    control.shutdown()
    gateway.stop()
    pool.stop()
    stack.stop()
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
