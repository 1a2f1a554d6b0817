"""`backpack`: run Backpack from the command line."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.panel import Panel

from backpack import __version__
from backpack.cli.deployment import admins, instances, serve
from backpack.cli.server import (
    ARCHIVE_OPTION,
    HOST_OPTION,
    LOG_LEVEL_OPTION,
    PORT_OPTION,
    WORKERS_OPTION,
    ASGIApp,
    configured_services,
    entry,
    uvicorn_options,
)
from backpack.cli.users import users

if TYPE_CHECKING:
    from backpack.api.app import BackpackApp, ForwardedPrefix
from backpack.errors import BackpackError

console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backpack")
def cli() -> None:
    """Backpack: a self-hosted backend for web apps.

    A backpack is an isolated backend with its own collections, records and
    keys, served over HTTP (see https://localhost:8000/api/docs once running).
    """


_PREFIX_ENV = "BACKPACK_FORWARDED_PREFIX"


@cli.command("serve-instance")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding this backpack's database and secret key (created if missing).",
)
@HOST_OPTION
@PORT_OPTION
@WORKERS_OPTION
@LOG_LEVEL_OPTION
@click.option(
    "--forwarded-prefix",
    envvar=_PREFIX_ENV,
    default=None,
    metavar="PREFIX",
    callback=lambda ctx, param, value: _checked_prefix(value),
    help="Path prefix a proxy in front also serves this backpack under (e.g. /i/todo): "
    "requests carrying it in X-Forwarded-Prefix get cookies and links scoped to it. "
    f"Set by the docker and swarm runtimes. [env: {_PREFIX_ENV}]",
)
def serve_instance(
    data_dir: Path,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    forwarded_prefix: str | None,
) -> None:
    """Serve one backpack alone at / (the API lives under /api).

    The secret key comes from BACKPACK_SECRET_KEY (a bpk_… string) or from
    DATA/secret_key; on first start a new key is generated, stored there with
    mode 0600 and printed once. Send it as 'Authorization: Bearer <key>' from
    servers only: it bypasses every rule.

    Files are kept in DATA/blobs, or in S3 when BACKPACK_FILES_URL is
    s3://bucket/prefix (needs the [s3] extra; see docs/files.md). Records are
    kept in DATA/backpack.db, or in PostgreSQL when BACKPACK_DATABASE_URL is
    set (the URL names the database); BACKPACK_REDIS_URL shares realtime and
    rate limits between servers (docs/deploy.md). With --workers N, N
    processes share the port (a dead one is started again). Behind a reverse
    proxy on this host, X-Forwarded-For and X-Forwarded-Proto from 127.0.0.1 or
    ::1 (or FORWARDED_ALLOW_IPS) name the client and scheme.
    """
    import uvicorn

    from backpack.platform.instance import build_instance_app, load_secret_key

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        key = load_secret_key(data_dir)
    except BackpackError as exc:
        raise click.ClickException(exc.message) from None
    services = configured_services(workers=workers)
    if key.generated:
        console.print(
            Panel.fit(
                f"[bold]{key.value}[/bold]\n\nStored in {data_dir / 'secret_key'} (mode 0600). "
                "It is shown only this once.",
                title="New secret key",
            )
        )
    console.print(f"Backpack {__version__} serving {data_dir} at http://{host}:{port}/api")
    if workers == 1:
        app = _prefixed(build_instance_app(data_dir, key.value, services), forwarded_prefix)
        uvicorn.run(entry(app), host=host, port=port, **uvicorn_options(log_level))
        return
    if forwarded_prefix is not None:
        os.environ[_PREFIX_ENV] = forwarded_prefix
    # Each worker builds its own app (uvicorn restarts one that dies); the key is on disk
    # or in the environment already, so every worker loads the same one.
    os.environ[_INSTANCE_DATA_ENV] = str(data_dir.resolve())
    uvicorn.run(
        "backpack.cli.main:instance_app_from_env",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        **uvicorn_options(log_level),
    )


@cli.command("backup-data")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The data directory of a `backpack serve-instance` (it may be serving).",
)
@ARCHIVE_OPTION
def backup_data(data_dir: Path, output: Path) -> None:
    """Back up the backpack of a `serve-instance` data directory to one archive.

    The same archive as `backpack instances backup` (records, files, key, a
    manifest with checksums), taken online: a server using DATA keeps serving.
    Records in PostgreSQL (BACKPACK_DATABASE_URL, as for serve-instance) are
    copied from one snapshot into the archive's SQLite file.
    `backpack instances restore NAME ARCHIVE` brings it into a deployment. The
    docker and swarm runtimes back up their containers' volumes with it.
    """
    from backpack.cli.deployment import progress_bar
    from backpack.platform.engines import backup_directory

    services = configured_services()
    directory = data_dir.resolve()
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"Backing up {data_dir}", total=None)
            asyncio.run(
                backup_directory(
                    directory,
                    output.resolve(),
                    name=directory.name,
                    services=services,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            )
    except BackpackError as exc:
        raise click.ClickException(exc.message) from None
    console.print(f"Wrote {output}.")


_INSTANCE_DATA_ENV = "BACKPACK_INSTANCE_DATA"


def instance_app_from_env() -> ASGIApp:
    """A `serve-instance --workers` worker's app: the data directory its parent named."""
    from backpack.platform.instance import build_instance_app, load_secret_key
    from backpack.platform.services import Services

    data_dir = Path(os.environ[_INSTANCE_DATA_ENV])
    app = build_instance_app(data_dir, load_secret_key(data_dir).value, Services.from_env())
    return entry(_prefixed(app, os.environ.get(_PREFIX_ENV) or None))


def _checked_prefix(value: str | None) -> str | None:
    from backpack.api.app import check_forwarded_prefix

    if not value:
        return None
    try:
        return check_forwarded_prefix(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--forwarded-prefix") from None


def _prefixed(app: BackpackApp, prefix: str | None) -> BackpackApp | ForwardedPrefix:
    from backpack.api.app import ForwardedPrefix

    return app if prefix is None else ForwardedPrefix(app, prefix)


cli.add_command(serve)
cli.add_command(instances)
cli.add_command(admins)
cli.add_command(users)


def main() -> None:
    cli()
