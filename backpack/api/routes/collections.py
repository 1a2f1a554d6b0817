"""/api/collections: create, list, read, change and drop collections (secret key only)."""

from __future__ import annotations

from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import Param, Request, Response, Route, empty_response, json_response

NAME = Param(
    "name",
    "path",
    {"type": "string", "examples": ["items"]},
    "Collection name",
    required=True,
)


def routes(ctx: InstanceContext) -> list[Route]:
    data = ctx.data

    async def list_collections(request: Request) -> Response:
        items = data.list_collections(await ctx.caller(request))
        return json_response({"items": [c.to_json() for c in items]})

    async def create_collection(request: Request) -> Response:
        caller = await ctx.caller(request)
        collection = await data.create_collection(caller, await ctx.body(request))
        return json_response(collection.to_json(), 201)

    async def get_collection(request: Request) -> Response:
        collection = data.get_collection(await ctx.caller(request), request.path_params["name"])
        return json_response(collection.to_json())

    async def update_collection(request: Request) -> Response:
        caller = await ctx.caller(request)
        collection = await data.update_collection(
            caller, request.path_params["name"], await ctx.body(request)
        )
        return json_response(collection.to_json())

    async def delete_collection(request: Request) -> Response:
        await data.delete_collection(await ctx.caller(request), request.path_params["name"])
        return empty_response()

    tag = "collections"
    return [
        Route(
            "GET",
            "/api/collections",
            list_collections,
            "List collections",
            tag,
            responses={200: schemas.COLLECTION_LIST},
        ),
        Route(
            "POST",
            "/api/collections",
            create_collection,
            "Create a collection",
            tag,
            body=schemas.COLLECTION_INPUT,
            responses={201: schemas.COLLECTION},
        ),
        Route(
            "GET",
            "/api/collections/{name}",
            get_collection,
            "Get a collection",
            tag,
            params=(NAME,),
            responses={200: schemas.COLLECTION},
        ),
        Route(
            "PATCH",
            "/api/collections/{name}",
            update_collection,
            "Change a collection's schema, rules or indexes",
            tag,
            params=(NAME,),
            body=schemas.COLLECTION_INPUT,
            responses={200: schemas.COLLECTION},
        ),
        Route(
            "DELETE",
            "/api/collections/{name}",
            delete_collection,
            "Delete a collection and its records",
            tag,
            params=(NAME,),
            responses={204: None},
        ),
    ]
