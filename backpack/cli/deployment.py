"""`backpack serve`, `backpack instances …` and `backpack admins …`: the control plane."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import click
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from backpack import __version__
from backpack.cli.server import (
    ARCHIVE_OPTION,
    HOST_OPTION,
    LOG_LEVEL_OPTION,
    PORT_OPTION,
    WORKERS_OPTION,
    configured_services,
    entry,
    uvicorn_options,
)
from backpack.errors import BackpackError
from backpack.platform.control import INSTANCES_DIR, Addressing, ControlPlane
from backpack.platform.runtime import EmbeddedRuntime
from backpack.platform.services import Services

T = TypeVar("T")
console = Console(stderr=True)
out = Console()

CONTROL_DB_ENV = "BACKPACK_CONTROL_DATABASE_URL"
LOCK_FILE = "serve.lock"

DATA_OPTION = click.option(
    "--data",
    "data_dir",
    default="./data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The deployment's data directory (as given to `backpack serve`).",
)


def _control(
    data_dir: Path,
    services: Services,
    addressing: Addressing | None = None,
    runtime: EmbeddedRuntime | None = None,
) -> ControlPlane:
    from backpack.platform.store import open_control_store

    store = open_control_store(data_dir, os.environ.get(CONTROL_DB_ENV) or None)
    return ControlPlane(data_dir, store, addressing=addressing, services=services, runtime=runtime)


@contextlib.contextmanager
def _serve_lock(data_dir: Path) -> Iterator[IO[str]]:
    """Held by `backpack serve` while it runs; the CLI's changes refuse to run beside it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / LOCK_FILE).open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(
                f"`backpack serve` is running on {data_dir}: make this change through its "
                "API (/admin/api) or stop it first."
            ) from None
        yield handle
    finally:
        handle.close()


def _offline(
    data_dir: Path, work: Callable[[ControlPlane], Awaitable[T]], *, exclusive: bool = True
) -> T:
    """Run `work` on the deployment in `data_dir` without serving it."""

    services = configured_services()

    async def main() -> T:
        control = _control(data_dir, services)
        await control.open(serve=False)
        try:
            return await work(control)
        finally:
            await control.close()

    try:
        if exclusive:
            with _serve_lock(data_dir):
                return asyncio.run(main())
        return asyncio.run(main())
    except BackpackError as exc:
        raise click.ClickException(_sentence(exc)) from None


def _sentence(exc: BackpackError) -> str:
    fields = exc.details.get("fields")
    if isinstance(fields, dict) and fields:
        return f"{exc.message} " + "; ".join(f"{k}: {v}" for k, v in fields.items())
    return exc.message


RUNTIME_OPTION = click.option(
    "--runtime",
    "runtime_kind",
    type=click.Choice(["embedded", "docker", "swarm"]),
    default="embedded",
    show_default=True,
    envvar="BACKPACK_RUNTIME",
    help="Where backpacks run: in this process, each in a Docker container, or each as a "
    "Swarm service (through DOCKER_HOST; see docs/deploy.md).",
)


def open_runtime(kind: str, root: Path, domain: str) -> EmbeddedRuntime | None:
    """The container runtime `kind` asks for (None: embedded), or a sentence naming --runtime."""
    if kind == "embedded":
        return None
    from backpack.platform.runtime_docker import EngineUnreachable, runtime_from_env

    try:
        return runtime_from_env(kind, root, domain)
    except EngineUnreachable as exc:
        raise click.ClickException(
            f"--runtime {kind} needs the Docker Engine API: {exc} Start Docker (or podman's "
            "`podman system service`), set DOCKER_HOST, or use --runtime embedded."
        ) from None


def _serve_workers(
    data_dir: Path,
    host: str,
    port: int,
    addressing: Addressing,
    runtime_kind: str,
    workers: int,
    log_level: str,
) -> None:
    """`serve --workers N` (N > 1): a supervisor and N worker processes on one socket."""
    from backpack.cli.supervisor import Supervisor, WorkerSettings, bind

    if runtime_kind != "embedded":
        raise click.ClickException(
            f"--workers runs backpacks in the server's own processes: use it with "
            f"--runtime embedded, not {runtime_kind}."
        )
    configured_services(workers=workers)
    with _serve_lock(data_dir):
        try:
            sock = bind(host, port)
        except OSError as exc:
            raise click.ClickException(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
        console.print(
            Panel.fit(
                f"Console   http://{host}:{port}/admin\n"
                f"Backpacks http://NAME.{addressing.domain}:{port}  or  "
                f"http://{host}:{port}/i/NAME\n"
                f"Data      {data_dir.resolve()}\n"
                f"Workers   {workers}",
                title=f"Backpack {__version__}",
            )
        )
        settings = WorkerSettings(data_dir, addressing.domain, addressing.port, log_level)
        status = Supervisor(workers, sock, settings).run()
    if status:
        raise click.exceptions.Exit(status)


@click.command("serve")
@DATA_OPTION
@HOST_OPTION
@PORT_OPTION
@click.option(
    "--domain",
    default="localhost",
    show_default=True,
    help="Backpack NAME is served at NAME.DOMAIN (and at /i/NAME on any host).",
)
@click.option(
    "--public-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="The port clients use, when a proxy listens on another one (default: --port).",
)
@RUNTIME_OPTION
@WORKERS_OPTION
@LOG_LEVEL_OPTION
def serve(
    data_dir: Path,
    host: str,
    port: int,
    domain: str,
    public_port: int | None,
    runtime_kind: str,
    workers: int,
    log_level: str,
) -> None:
    """Run the control plane and every backpack in DATA.

    The console is at http://HOST:PORT/admin (first visit: create the first
    admin), its API at /admin/api. Each backpack NAME answers at
    http://NAME.DOMAIN:PORT and at http://HOST:PORT/i/NAME; its data lives in
    DATA/instances/NAME. Admins and the registry of backpacks are kept in
    DATA/control.db, or in PostgreSQL when BACKPACK_CONTROL_DATABASE_URL is set.

    Scale-out (docs/deploy.md): with BACKPACK_DATABASE_URL (a PostgreSQL
    cluster) each backpack's records live in a database of its own,
    backpack_NAME; BACKPACK_REDIS_URL carries realtime events and rate limits;
    BACKPACK_FILES_URL (s3://bucket/prefix) keeps files under prefix/NAME.

    Workers (docs/deploy.md): --workers N runs N processes on the one port,
    restarted if one dies; it needs BACKPACK_REDIS_URL or BACKPACK_DATABASE_URL
    so realtime events reach every worker. Each response's X-Backpack-Worker
    header names the worker that answered.

    Behind a reverse proxy on this host, X-Forwarded-For and X-Forwarded-Proto
    from 127.0.0.1 or ::1 (or FORWARDED_ALLOW_IPS) name the client and scheme.
    """
    import uvicorn

    from backpack.platform.router import DeploymentApp

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    addressing = Addressing(domain=domain.lower().strip("."), port=public_port or port)
    if workers > 1:
        _serve_workers(data_dir, host, port, addressing, runtime_kind, workers, log_level)
        return
    runtime = open_runtime(runtime_kind, data_dir / INSTANCES_DIR, addressing.domain)
    try:
        control = _control(data_dir, configured_services(), addressing, runtime)
    except BackpackError as exc:
        raise click.ClickException(_sentence(exc)) from None
    with _serve_lock(data_dir):
        console.print(
            Panel.fit(
                f"Console   http://{host}:{port}/admin\n"
                f"Backpacks http://NAME.{addressing.domain}:{port}  or  "
                f"http://{host}:{port}/i/NAME\n"
                f"Data      {data_dir.resolve()}",
                title=f"Backpack {__version__}",
            )
        )
        app = entry(DeploymentApp(control))
        uvicorn.run(app, host=host, port=port, **uvicorn_options(log_level))


@click.group("instances")
def instances() -> None:
    """Create, list, stop, start, back up, restore and delete backpacks.

    These work on the data directory. Changes refuse to run while `backpack
    serve` runs on it (use the API then); `list` and `backup` work either way.
    """


@instances.command("list")
@DATA_OPTION
def list_instances(data_dir: Path) -> None:
    """Every backpack with its status."""
    items = _offline(data_dir, lambda c: c.list_instances(""), exclusive=False)
    table = Table("name", "status", "created", "path")
    for item in items:
        urls = item["urls"]
        assert isinstance(urls, dict)
        table.add_row(
            str(item["name"]), str(item["status"]), str(item["created"]), str(urls["api"])
        )
    out.print(table)


@instances.command("create")
@DATA_OPTION
@click.argument("name")
def create_instance(data_dir: Path, name: str) -> None:
    """Create the backpack NAME (see the naming rule in docs/control-plane.md)."""

    async def work(control: ControlPlane) -> str:
        await control.create_instance(name, "")
        return (await control.secret_key(name))["secret_key"]  # type: ignore[return-value]

    key = _offline(data_dir, work)
    out.print(f"Created backpack [bold]{name}[/bold]. Its secret key: {key}")


@instances.command("delete")
@DATA_OPTION
@click.argument("name")
@click.option("--confirm", help="The backpack's name again, to confirm (asked when missing).")
def delete_instance(data_dir: Path, name: str, confirm: str | None) -> None:
    """Delete the backpack NAME and every byte of its data."""
    if confirm is None:
        confirm = click.prompt(f"Type '{name}' to delete it and all its data")
    _offline(data_dir, lambda c: c.delete_instance(name, confirm))
    out.print(f"Deleted backpack {name}.")


@instances.command("stop")
@DATA_OPTION
@click.argument("name")
def stop_instance(data_dir: Path, name: str) -> None:
    """Mark NAME stopped: `backpack serve` answers 503 for it, its data stays."""
    _offline(data_dir, lambda c: c.stop_instance(name, ""))
    out.print(f"Stopped backpack {name}.")


@instances.command("start")
@DATA_OPTION
@click.argument("name")
def start_instance(data_dir: Path, name: str) -> None:
    """Mark NAME running again."""
    _offline(data_dir, lambda c: c.start_instance(name, ""))
    out.print(f"Started backpack {name}.")


def progress_bar(*, records: bool = False) -> Progress:
    """A progress bar of bytes (backups), or of records with `records`."""
    if records:
        columns: tuple[ProgressColumn, ...] = (MofNCompleteColumn(), TimeRemainingColumn())
    else:
        columns = (DownloadColumn(), TransferSpeedColumn())
    return Progress(TextColumn("{task.description}"), BarColumn(), *columns, console=console)


@instances.command("backup")
@DATA_OPTION
@click.argument("name")
@ARCHIVE_OPTION
def backup_instance(data_dir: Path, name: str, output: Path) -> None:
    """Write a backup archive of NAME (taken online: a running server keeps serving)."""

    async def work(control: ControlPlane) -> None:
        await control.instance(name)
        with progress_bar() as bar:
            task = bar.add_task(f"Backing up {name}", total=None)
            await control.runtime.backup(
                name,
                output.resolve(),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    _offline(data_dir, work, exclusive=False)
    out.print(f"Wrote {output}.")


@instances.command("restore")
@DATA_OPTION
@click.argument("name")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore_instance(data_dir: Path, name: str, archive: Path) -> None:
    """Rebuild NAME from ARCHIVE (a new backpack, or replacing the one of that name).

    The archive is verified in full first; a damaged one changes nothing.
    """
    from backpack.platform.backup import verify_backup

    async def work(control: ControlPlane) -> None:
        with progress_bar() as bar:
            task = bar.add_task("Verifying", total=None)
            await asyncio.to_thread(
                verify_backup,
                archive,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        await control.restore_instance(name, archive, "")

    _offline(data_dir, work)
    out.print(f"Restored backpack {name} from {archive}.")


@instances.command("move")
@DATA_OPTION
@click.argument("name")
@click.option(
    "--to",
    "engine",
    required=True,
    type=click.Choice(["postgres", "sqlite", "embedded"]),
    help="Where NAME's records go: PostgreSQL (BACKPACK_DATABASE_URL) or back to the "
    "embedded SQLite file ('embedded' and 'sqlite' are the same).",
)
def move_instance(data_dir: Path, name: str, engine: str) -> None:
    """Move NAME's records, users, file metadata and settings to another engine.

    The copy is taken from one snapshot, then counted and checksummed against
    it; only an exact copy is switched over, and the old copy is removed after.
    Run it while `backpack serve` is stopped. Needs BACKPACK_DATABASE_URL (the
    cluster) either way.
    """
    to = "sqlite" if engine == "embedded" else engine

    async def work(control: ControlPlane) -> dict[str, int]:
        await control.instance(name)
        with progress_bar(records=True) as bar:
            task = bar.add_task(f"Moving {name} to {to}", total=None)
            return await control.runtime.move(
                name,
                to,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    counts = _offline(data_dir, work)
    table = Table("collection", "records", title=f"{name} is now on {to}; verified")
    for collection, count in sorted(counts.items()):
        table.add_row(collection, str(count))
    out.print(table)


@click.group("admins")
def admins() -> None:
    """Manage the control plane's admins (in DATA/control.db or BACKPACK_CONTROL_DATABASE_URL)."""


@admins.command("create")
@DATA_OPTION
@click.option("--email", required=True, help="The admin's email address.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (no prompt)."
)
def create_admin(data_dir: Path, email: str, password_stdin: bool) -> None:
    """Add an admin (the first one, or another)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")

    async def work(control: ControlPlane) -> str:
        admin = await control.admins.invite(email, password)
        return admin.id

    admin_id = _offline(data_dir, work, exclusive=False)
    out.print(f"Created admin {email} ({admin_id}).")


@admins.command("list")
@DATA_OPTION
def list_admins(data_dir: Path) -> None:
    """Every admin."""
    items = _offline(data_dir, lambda c: c.admins.list_admins(), exclusive=False)
    table = Table("id", "email", "created")
    for admin in items:
        table.add_row(admin.id, admin.email, admin.created)
    out.print(table)


@admins.command("delete")
@DATA_OPTION
@click.argument("admin_id")
def delete_admin(data_dir: Path, admin_id: str) -> None:
    """Remove the admin ADMIN_ID (never the last one)."""
    _offline(data_dir, lambda c: c.admins.delete(admin_id), exclusive=False)
    out.print(f"Deleted admin {admin_id}.")
