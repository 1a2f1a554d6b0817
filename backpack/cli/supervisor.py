"""`backpack serve --workers N`: N worker processes serving one listening socket.

The supervisor (the process `backpack serve` started in) binds the socket,
removes what an interrupted upload or restore left, and spawns the workers;
each worker is a whole `backpack serve` (control plane, every backpack) on the
shared socket, and the kernel spreads connections over them. A worker that dies
(even by SIGKILL) is started again under the same number, so its log and
metrics files continue; the others keep serving meanwhile. SIGINT or SIGTERM
stops them all. Workers run in a process group of their own, so a terminal's
Ctrl-C reaches the supervisor only, which stops each worker once, gracefully;
a worker whose supervisor vanished stops itself.

Every response carries `X-Backpack-Worker: K` (uvicorn adds it; no cost per
request), which tells an operator which worker answered.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Final

from backpack.platform.control import remove_leftovers

log = logging.getLogger("backpack.supervisor")

WORKER_HEADER: Final = "x-backpack-worker"
MAX_WORKERS: Final = 64
STARTUP_FAILURE: Final = 3  # uvicorn's exit status when the app failed to start
STOP_TIMEOUT: Final = 25.0  # seconds a worker gets to finish its requests and flush
_POLL: Final = 0.2  # seconds between the supervisor's looks at its workers
_QUICK_DEATH: Final = 5.0  # a worker that dies sooner after its start waits before the next
_MAX_BACKOFF: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What each worker needs to serve (the environment carries the rest)."""

    data_dir: Path
    domain: str
    public_port: int
    log_level: str


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class _Slot:
    number: int
    process: BaseProcess
    started: float
    generation: int = 1  # how many times this number was started
    restart_at: float | None = None  # a quick death's restart, postponed


class Supervisor:
    """Keeps `count` workers running on `sock` until SIGINT or SIGTERM; `run` returns the
    exit status."""

    def __init__(self, count: int, sock: socket.socket, settings: WorkerSettings) -> None:
        self.count = count
        self.sock = sock
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self._slots: list[_Slot] = []

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stop.set())
        remove_leftovers(self.settings.data_dir)
        self._slots = [_Slot(n, self._spawn(n), time.monotonic()) for n in range(1, self.count + 1)]
        status = 0
        while not self._stop.wait(_POLL):
            failed = self._keep_alive()
            if failed is not None:
                log.error("Worker %d could not start; stopping (its log is above).", failed)
                status = 1
                break
        self._stop_all()
        return status

    def _spawn(self, number: int) -> BaseProcess:
        process = self._context.Process(
            target=run_worker,
            args=(number, self.sock, self.settings, os.getpid()),
            name=f"backpack-worker-{number}",
        )
        process.start()
        log.info("Worker %d started (pid %s).", number, process.pid)
        return process

    def _keep_alive(self) -> int | None:
        """Start dead workers again; the number of one whose first start failed, if any."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    slot.restart_at = None
                    slot.process, slot.started = self._spawn(slot.number), now
                    slot.generation += 1
                continue
            if slot.process.is_alive():
                continue
            code = slot.process.exitcode
            slot.process.join()
            if code == STARTUP_FAILURE and slot.generation == 1:
                return slot.number
            log.warning("Worker %d ended (exit status %s); starting it again.", slot.number, code)
            lived = now - slot.started
            if lived < _QUICK_DEATH:
                slot.restart_at = now + min(_MAX_BACKOFF, 0.5 * 2 ** min(slot.generation, 5))
            else:
                slot.process, slot.started = self._spawn(slot.number), now
                slot.generation += 1
        return None

    def _stop_all(self) -> None:
        running = [slot.process for slot in self._slots if slot.restart_at is None]
        for process in running:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("Worker %s did not stop in time; killing it.", process.name)
                process.kill()
                process.join()


def run_worker(number: int, sock: socket.socket, settings: WorkerSettings, parent: int) -> None:
    """One worker: the whole deployment app on the shared socket (in a spawned process)."""
    import uvicorn

    from backpack.cli.deployment import CONTROL_DB_ENV
    from backpack.cli.server import entry, uvicorn_options
    from backpack.platform.control import Addressing, ControlPlane
    from backpack.platform.router import DeploymentApp
    from backpack.platform.services import Services
    from backpack.platform.store import open_control_store

    os.setpgid(0, 0)  # a terminal's Ctrl-C is the supervisor's to pass on
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format=f"%(levelname)s w{number} %(name)s: %(message)s")
    addressing = Addressing(domain=settings.domain, port=settings.public_port)
    store = open_control_store(settings.data_dir, os.environ.get(CONTROL_DB_ENV) or None)
    control = ControlPlane(
        settings.data_dir,
        store,
        addressing=addressing,
        services=Services.from_env(),
        worker=number,
    )
    options = uvicorn_options(settings.log_level)
    config = uvicorn.Config(
        entry(DeploymentApp(control)), headers=[(WORKER_HEADER, str(number))], **options
    )
    server = uvicorn.Server(config)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _watch_parent(parent: int) -> None:
    """Stop this worker when its supervisor is gone (killed without passing the signal on)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
