"""The admin API (bearer token): reload a repository version, read and replace the routing."""

from __future__ import annotations

import hmac

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contract.verify import RepositoryError
from service.core.gateway import Gateway
from service.core.routing import parse_routing
from service.errors import AdminDisabled, InvalidField, Unauthorized, describe
from service.http.bodies import body_object, body_of, json_body_of, parse_json, require_json
from service.http.responses import guarded, json_response
from service.runtime.locations import TARGET_FORMS, models_root, reload_target


def admin_routes(gateway: Gateway) -> list[Route]:
    """POST /admin/reload, GET/PUT /admin/routing, POST /admin/rollback, GET /admin/decisions."""
    settings = gateway.settings

    def check_admin(request: Request) -> None:
        token = settings.admin_token
        if token is None:
            raise AdminDisabled("admin API disabled: set GATEWAY_ADMIN_TOKEN to enable it")
        auth = request.headers.get("authorization", "")
        given = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthorized("Authorization: expected 'Bearer <admin token>'")

    async def admin_reload(request: Request) -> Response:
        check_admin(request)
        raw = await body_of(request, settings.max_body_bytes, settings.body_timeout_s)
        if raw.strip():
            require_json(request.scope)
        body = body_object(parse_json(raw)) if raw.strip() else {}
        extra = sorted(set(body) - {"repository"})
        if extra:
            raise InvalidField(extra[0], "only 'repository'", "an unknown field")
        value = body.get("repository")
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidField("repository", TARGET_FORMS, describe(value))
        root = models_root(settings.repository)
        try:
            path = reload_target(root, value, gateway.repo.manifest.name) if value else None
        except RepositoryError as exc:
            raise InvalidField("repository", TARGET_FORMS, str(exc)) from exc
        try:
            repo = await anyio.to_thread.run_sync(lambda: gateway.load(path))
        except RepositoryError as exc:
            # Verification errors name files of the version under the root: shown relative to it.
            raise InvalidField(
                "repository", "a valid model repository", str(exc).replace(f"{root}/", "")
            ) from exc
        return json_response(
            {"model": repo.manifest.name, "version": repo.manifest.version, "path": str(repo.path)}
        )

    async def admin_routing(request: Request) -> Response:
        check_admin(request)
        if request.method == "GET":
            return json_response(gateway.router.as_routing().model_dump(mode="json"))
        raw = await json_body_of(request, settings.max_body_bytes, settings.body_timeout_s)
        routing = parse_routing(body_object(parse_json(raw)))
        router = gateway.set_routing(routing)
        return json_response(router.as_routing().model_dump(mode="json"))

    async def admin_rollback(request: Request) -> Response:
        check_admin(request)
        return json_response(await anyio.to_thread.run_sync(gateway.promoter.rollback))

    async def admin_decisions(request: Request) -> Response:
        check_admin(request)
        found = await anyio.to_thread.run_sync(gateway.promoter.decisions)
        return json_response({"decisions": found})

    return [
        Route("/admin/reload", guarded("admin", admin_reload), methods=["POST"]),
        Route("/admin/routing", guarded("admin", admin_routing), methods=["GET", "PUT"]),
        Route("/admin/rollback", guarded("admin", admin_rollback), methods=["POST"]),
        Route("/admin/decisions", guarded("admin", admin_decisions), methods=["GET"]),
    ]
