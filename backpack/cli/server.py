"""How Backpack runs uvicorn: one place for the options every `backpack serve*` command shares."""

from __future__ import annotations

import asyncio
import operator
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import click

from backpack.api.http import Receive, Scope, Send
from backpack.platform.services import ServiceError, Services

REALTIME_MAX_FRAME = 128 * 1024  # uvicorn's cap; the endpoint answers >64 KiB with 1009


ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# What uvicorn trusts to say who the client is when nothing says otherwise (its own default).
FORWARDED_ALLOW_IPS_ENV: Final = "FORWARDED_ALLOW_IPS"
DEFAULT_FORWARDED_ALLOW_IPS: Final = "127.0.0.1,::1"
_FORWARDED: Final = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})
_NAME: Final = operator.itemgetter(0)


class ProxyHeaders:
    """uvicorn's ProxyHeadersMiddleware (a trusted proxy's X-Forwarded-For and -Proto become
    the request's client and scheme), run only for requests that carry one of those headers.

    uvicorn wraps every app in it, and for each request from a trusted address (127.0.0.1:
    a local reverse proxy, a local load test) it first parses that address with `ipaddress`:
    about 8,000 instructions per request under callgrind. A request without either header
    leaves it nothing to rewrite, so this looks for them first, at C speed, and hands only
    the others to it: about 4,000 instructions fewer per record GET (~2 %), this frame
    counted. uvicorn runs with `proxy_headers` off.
    """

    def __init__(self, app: ASGIApp, trusted_hosts: str) -> None:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware  # only to serve

        self.app = app
        self.proxied = ProxyHeadersMiddleware(app, trusted_hosts)  # type: ignore[arg-type]

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: it returns the app's (see DeploymentApp.__call__).
        if _FORWARDED.isdisjoint(map(_NAME, scope.get("headers", ()))):
            return self.app(scope, receive, send)
        return self.proxied(scope, receive, send)  # type: ignore[arg-type]


def entry(app: ASGIApp) -> ASGIApp:
    """What uvicorn is given for `app`: its bound `__call__` behind ProxyHeaders, itself a
    bound method. Calling an object whose class defines `__call__` in Python takes CPython a
    slower path than calling a bound method (about 650 instructions more per request,
    counted under callgrind)."""
    call: ASGIApp = app.__call__  # type: ignore[operator]  # a Callable's own __call__
    trusted = os.environ.get(FORWARDED_ALLOW_IPS_ENV, DEFAULT_FORWARDED_ALLOW_IPS)
    return ProxyHeaders(call, trusted).__call__


def uvicorn_options(log_level: str) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`, apart from the app and address."""
    return {
        "log_level": log_level,
        "access_log": False,
        "proxy_headers": False,  # `entry` applies them (ProxyHeaders)
        "server_header": False,
        "date_header": False,
        "lifespan": "on",
        # Said, not guessed (the apps are bound methods, see `entry`; the router's returns
        # the coroutine that answers).
        "interface": "asgi3",
        "loop": "uvloop",
        "http": "httptools",
        # Heartbeats on timers, no task per socket: ~19 KB per idle realtime connection in
        # all (bench/realtime.py), ~27 KB with the legacy "websockets" implementation.
        "ws": "websockets-sansio",
        # Realtime sends one small message to many sockets: compressing each one per
        # subscriber costs more than it saves, and hides slow consumers behind zlib.
        "ws_per_message_deflate": False,
        "ws_max_size": REALTIME_MAX_FRAME,
    }


# The options every serve command shares.
HOST_OPTION = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on."
)
PORT_OPTION = click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
WORKERS_OPTION = click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes serving the one port (more than 1 needs BACKPACK_REDIS_URL or "
    "BACKPACK_DATABASE_URL, so that realtime events reach every worker).",
)
ARCHIVE_OPTION = click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The archive to write (a tar file).",
)
LOG_LEVEL_OPTION = click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="How much the server logs.",
)


def configured_services(*, check: bool = True, workers: int = 1) -> Services:
    """The services the environment configures (BACKPACK_DATABASE_URL, …), checked to answer.

    A missing or misconfigured service stops the command with one clear sentence; so
    does more than one worker without a bus they can share.
    """
    try:
        services = Services.from_env()
        if check:
            asyncio.run(services.check())
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    if workers > 1 and services.bus_url is None:
        raise click.ClickException(
            f"--workers {workers} needs a bus the workers share: set BACKPACK_REDIS_URL "
            "(or BACKPACK_DATABASE_URL, for PostgreSQL's LISTEN/NOTIFY)."
        )
    return services
