"""`backpack users …`: manage the users of a standalone backpack from its data directory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table

from backpack.api.context import InstanceContext
from backpack.core import jsonutil
from backpack.core.access import SECRET_KEY
from backpack.core.query import parse_list_params
from backpack.errors import BackpackError
from backpack.types import JSONObject

T = TypeVar("T")
console = Console()

DATA_OPTION = click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The backpack's data directory (as given to serve-instance).",
)


def _run(data_dir: Path, work: Callable[[InstanceContext], Awaitable[T]]) -> T:
    from backpack.platform.instance import build_instance, load_secret_key

    async def main() -> T:
        ctx = build_instance(data_dir, load_secret_key(data_dir).value)
        await ctx.open()
        try:
            return await work(ctx)
        finally:
            await ctx.close()

    try:
        return asyncio.run(main())
    except BackpackError as exc:
        raise click.ClickException(exc.message) from None


async def _user_id(ctx: InstanceContext, email: str) -> str:
    from backpack.auth.service import normalize_email

    user = await ctx.auth.user_by_email(normalize_email(email))
    if user is None:
        raise click.ClickException(f"No user has the email {email}.")
    return str(user["id"])


@click.group("users")
def users() -> None:
    """Manage the users of a backpack (works while it is serving)."""


@users.command("list")
@DATA_OPTION
@click.option("--filter", "filter_", default="", help='A filter, e.g. \'{"role": "editor"}\'.')
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def list_users(data_dir: Path, filter_: str, limit: int) -> None:
    """List users (id, email, verified, role, created)."""

    async def work(ctx: InstanceContext) -> list[JSONObject]:
        params = parse_list_params({"filter": filter_, "limit": str(limit), "count": "true"})
        page = await ctx.auth.list_users(SECRET_KEY, params)
        return [jsonutil.loads(doc) for doc in page.docs]

    table = Table("id", "email", "verified", "role", "created")
    for user in _run(data_dir, work):
        table.add_row(*(str(user[k]) for k in ("id", "email", "verified", "role", "created")))
    console.print(table)


@users.command("create")
@DATA_OPTION
@click.option("--email", required=True)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Prompted for when not given.",
)
@click.option("--role", default="user", show_default=True)
@click.option(
    "--verified/--unverified",
    default=True,
    show_default=True,
    help="Whether the email counts as confirmed.",
)
def create_user(data_dir: Path, email: str, password: str, role: str, verified: bool) -> None:
    """Create a user with a password."""

    async def work(ctx: InstanceContext) -> JSONObject:
        body: JSONObject = {
            "email": email,
            "password": password,
            "role": role,
            "verified": verified,
        }
        return await ctx.auth.create_user(SECRET_KEY, body)

    user = _run(data_dir, work)
    console.print(f"Created user {user['id']} ({user['email']}).")


@users.command("set-password")
@DATA_OPTION
@click.option("--email", required=True)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Prompted for when not given.",
)
def set_password(data_dir: Path, email: str, password: str) -> None:
    """Set a user's password; signs them out everywhere."""

    async def work(ctx: InstanceContext) -> None:
        await ctx.auth.update_user(SECRET_KEY, await _user_id(ctx, email), {"password": password})

    _run(data_dir, work)
    console.print(f"Password of {email} changed; their sessions are revoked.")


@users.command("delete")
@DATA_OPTION
@click.option("--email", required=True)
@click.confirmation_option(prompt="Delete this user and all their sessions?")
def delete_user(data_dir: Path, email: str) -> None:
    """Delete a user with their sessions."""

    async def work(ctx: InstanceContext) -> None:
        await ctx.auth.delete_user(SECRET_KEY, await _user_id(ctx, email))

    _run(data_dir, work)
    console.print(f"Deleted {email}.")


@users.command("reset-link")
@DATA_OPTION
@click.option("--email", required=True)
@click.option(
    "--base-url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Where the backpack (or the app, if settings.app_url is set) is reached.",
)
def reset_link(data_dir: Path, email: str, base_url: str) -> None:
    """Print a one-time password reset link (valid 30 minutes) to hand to a user."""

    async def work(ctx: InstanceContext) -> str:
        token = await ctx.auth.reset_link_token(email)
        base = ctx.settings.current.app_url or base_url
        return f"{base.rstrip('/')}/auth/reset?token={token}"

    click.echo(_run(data_dir, work))
