"""/api/users (secret key): administer the backpack's users."""

from __future__ import annotations

from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import (
    Param,
    Request,
    Response,
    Route,
    empty_response,
    json_response,
    raw_json_response,
)
from backpack.api.routes.records import IF_MATCH, LIST_PARAMS, page_body
from backpack.core.query import parse_list_params
from backpack.core.records import parse_if_match

USER_ID = Param("id", "path", {"type": "string"}, "User id", required=True)


def routes(ctx: InstanceContext) -> list[Route]:
    auth = ctx.auth

    async def list_users(request: Request) -> Response:
        caller = await ctx.caller(request)
        page = await auth.list_users(caller, parse_list_params(request.query))
        return raw_json_response(page_body(page))

    async def create_user(request: Request) -> Response:
        caller = await ctx.caller(request)
        return json_response(await auth.create_user(caller, await ctx.body(request)), 201)

    async def get_user(request: Request) -> Response:
        caller = await ctx.caller(request)
        return json_response(await auth.get_user(caller, request.path_params["id"]))

    async def update_user(request: Request) -> Response:
        caller = await ctx.caller(request)
        if_match = parse_if_match(request.headers.get("if-match"))
        user = await auth.update_user(
            caller, request.path_params["id"], await ctx.body(request), if_match
        )
        return json_response(user)

    async def delete_user(request: Request) -> Response:
        await auth.delete_user(await ctx.caller(request), request.path_params["id"])
        return empty_response()

    async def revoke_sessions(request: Request) -> Response:
        caller = await ctx.caller(request)
        ended = await auth.revoke_user_sessions(caller, request.path_params["id"])
        return json_response({"revoked": ended})

    async def reset_link(request: Request) -> Response:
        caller = await ctx.caller(request)
        token = await auth.reset_token_for(caller, request.path_params["id"])
        return json_response({"link": ctx.link(request, "reset", token), "token": token}, 201)

    tag = "users"
    user_body = {"type": "object"}
    return [
        Route(
            "GET",
            "/api/users",
            list_users,
            "List users",
            tag,
            params=LIST_PARAMS,
            responses={200: schemas.USER_PAGE},
        ),
        Route(
            "POST",
            "/api/users",
            create_user,
            "Create a user",
            tag,
            body=user_body,
            responses={201: schemas.USER},
        ),
        Route(
            "GET",
            "/api/users/{id}",
            get_user,
            "Get a user",
            tag,
            params=(USER_ID,),
            responses={200: schemas.USER},
        ),
        Route(
            "PATCH",
            "/api/users/{id}",
            update_user,
            "Change a user's email, password, verified, role or data",
            tag,
            params=(USER_ID, IF_MATCH),
            body=user_body,
            responses={200: schemas.USER},
        ),
        Route(
            "DELETE",
            "/api/users/{id}",
            delete_user,
            "Delete a user, their sessions and tokens",
            tag,
            params=(USER_ID,),
            responses={204: None},
        ),
        Route(
            "DELETE",
            "/api/users/{id}/sessions",
            revoke_sessions,
            "Sign a user out everywhere",
            tag,
            params=(USER_ID,),
            responses={200: {"type": "object", "properties": {"revoked": {"type": "integer"}}}},
        ),
        Route(
            "POST",
            "/api/users/{id}/reset-link",
            reset_link,
            "A one-time password reset link to hand to the user (valid 30 minutes)",
            tag,
            params=(USER_ID,),
            responses={
                201: {
                    "type": "object",
                    "properties": {"link": {"type": "string"}, "token": {"type": "string"}},
                }
            },
        ),
    ]
