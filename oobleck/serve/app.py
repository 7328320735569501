"""``create_app``: a FastAPI app that serves compiled programs.

Each program gets ``POST /programs/<name>``, whose request and response models come from its
signature (so the OpenAPI docs at ``/docs`` show its fields). Calls go through the program's
async path (``await program.acall``), so concurrent requests share the LM layer: HTTP LMs run
on the event loop, in-process Hugging Face models batch requests from many worker threads
into one ``generate``. Errors never show a traceback: a bad request is a 422 naming the field,
an LM failure a 502, anything else a 500, each with a request id that is also in the log.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from oobleck._json import to_jsonable
from oobleck._version import __version__
from oobleck.errors import BudgetExceeded, InputError, LMError, OobleckError, ParseError, RetrievalError
from oobleck.lm.usage import track_usage
from oobleck.modules.module import Module
from oobleck.serve.metrics import CONTENT_TYPE, Metrics
from oobleck.serve.registry import Registry, ServedProgram
from oobleck.serve.schema import ErrorBody, Health, ProgramList, models_for

__all__ = ["create_app", "error_response", "lm_failure", "request_id_of"]

logger = logging.getLogger("oobleck.serve")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ERRORS = {413: {"model": ErrorBody, "description": "the request body is too large"},
           422: {"model": ErrorBody, "description": "invalid input: the message and `detail` name the field"},
           502: {"model": ErrorBody, "description": "the LM failed or its reply could not be parsed"},
           503: {"model": ErrorBody, "description": "the LM budget is spent"},
           500: {"model": ErrorBody, "description": "unexpected server error (logged with the request id)"}}  # fmt: skip


_INTERNAL = "internal server error; the server log has the details under this request id"


def lm_failure(exc: Exception) -> str:
    """What a client is told about an LM failure: its kind, never the LM's address or reply (those go to the log)."""
    from oobleck.errors import LMConnectionError, LMResponseError

    if isinstance(exc, ParseError):
        return "the LM's reply could not be parsed into the output fields; the server log has it under this request id"
    if isinstance(exc, LMConnectionError):
        what = "the LM server could not be reached"
    elif isinstance(exc, LMResponseError) and exc.status is not None:
        what = f"the LM server answered HTTP {exc.status}"
    else:
        what = f"the LM call failed ({type(exc).__name__})"
    return f"{what}; the server log has the details under this request id"


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", None) or "-"


def error_response(request: Request, status: int, kind: str, message: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"type": kind, "message": message}, "request_id": request_id_of(request)}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class _RequestContext:
    """Outermost ASGI layer: a request id on every request and response, and request metrics.

    An incoming ``X-Request-ID`` made of safe characters is kept, so a caller's id follows the
    request into the log; otherwise one is made. Endpoints are labelled by route template
    (``/programs/qa``, ``/v1/chat/completions``), never by raw path.
    """

    def __init__(self, app: Any, metrics: Metrics, direct: Mapping[str, _ProgramRoute] | None = None):
        self.app = app
        self.metrics = metrics
        self.direct = dict(direct or {})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        started = time.perf_counter()
        self.metrics.started()
        try:
            program = self.direct.get(scope["path"]) if scope["method"] == "POST" and not scope.get("root_path") else None
            if program is None:
                await self.app(scope, receive, send_with_id)
            else:
                # A program request goes straight to its handler, which answers every failure
                # itself: FastAPI's routing and inner middleware took about as much CPU per
                # request as the handler and the program's own Python work. Anything that still
                # escapes meets the same outer error handling as on the routed path.
                scope["route"] = program
                response = await program.endpoint.handle(Request(scope, receive))
                await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            # Every unrouted request shares one label (redirects included), so no client can grow the label set.
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.finished(scope.get("method", "-"), endpoint, status, time.perf_counter() - started)


class _ProgramRoute(APIRoute):
    """An APIRoute whose OpenAPI entry comes from the declared body model, but whose requests go
    straight to ``endpoint.handle(request)``: one ``model_validate_json`` call (JSON parsing and
    validation in pydantic-core) instead of FastAPI's per-request dependency machinery, which
    cost as much CPU as the rest of the request's handling here.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        return self.endpoint.handle  # type: ignore[attr-defined, no-any-return]


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _program_route(app: FastAPI, served: ServedProgram, metrics: Metrics, taken: set[str], max_body_bytes: int) -> None:
    """Register ``POST /programs/<name>`` for one program."""
    from pydantic import ValidationError

    models = models_for(served, taken)
    request_model = models.request
    aliases = [(key, field.alias or key) for key, field in request_model.model_fields.items()]
    outputs = None if served.outputs is None else [f.name for f in served.outputs]
    program = served.program
    endpoint_label = f"/programs/{served.name}"

    async def handle(request: Request) -> Response:
        raw = await _read_body(request, max_body_bytes)
        if raw is None:
            metrics.error(endpoint_label, "invalid_request")
            return error_response(request, 413, "invalid_request", f"the request body is larger than {max_body_bytes} bytes")
        try:
            body = request_model.model_validate_json(raw)
        except ValidationError as exc:
            detail = [{"loc": ["body", *(str(p) for p in e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
            metrics.error(endpoint_label, "invalid_request")
            return error_response(request, 422, "invalid_request", "; ".join(_describe_error(e) for e in detail), detail)
        inputs = {alias: getattr(body, key) for key, alias in aliases}
        usage = None
        try:
            with track_usage() as usage:
                prediction = await program.acall(**inputs)
            result = _outputs(prediction, outputs)
        except InputError as exc:
            metrics.error(endpoint_label, "invalid_request")
            return error_response(request, 422, "invalid_request", str(exc))
        except (LMError, ParseError, RetrievalError) as exc:  # an upstream (LM, retriever) failed: a bad gateway
            metrics.error(endpoint_label, "lm_error")
            logger.warning("request %s to %s: LM failure: %s: %s", request_id_of(request), served.name, type(exc).__name__, exc)
            return error_response(request, 502, "lm_error", lm_failure(exc))
        except BudgetExceeded as exc:
            metrics.error(endpoint_label, "budget_exceeded")
            logger.warning("request %s to %s: %s", request_id_of(request), served.name, exc)
            return error_response(request, 503, "budget_exceeded", "the LM budget is spent")
        except OobleckError as exc:
            metrics.error(endpoint_label, "internal_error")
            logger.error("request %s to %s failed: %s: %s", request_id_of(request), served.name, type(exc).__name__, exc)
            return error_response(request, 500, "internal_error", _INTERNAL)
        except Exception:
            metrics.error(endpoint_label, "internal_error")
            logger.exception("request %s to %s failed", request_id_of(request), served.name)
            return error_response(request, 500, "internal_error", _INTERNAL)
        finally:
            if usage is not None:
                metrics.lm_usage(served.name, usage.calls, usage.prompt_tokens, usage.completion_tokens, usage.cache_hits)
        return JSONResponse(result)

    async def run_program(body: Any) -> Any:  # what the OpenAPI docs describe; requests go to ``handle``
        raise NotImplementedError

    run_program.handle = handle  # type: ignore[attr-defined]
    run_program.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=request_model)]
    )
    app.router.add_api_route(f"/programs/{served.name}", run_program, methods=["POST"], response_model=models.response, responses=_ERRORS,
                      summary=f"Run {served.name} ({served.kind})", description=served.instructions or "",
                      operation_id=f"run_{re.sub(r'[^A-Za-z0-9_]', '_', served.name)}", tags=["programs"],
                      route_class_override=_ProgramRoute)  # fmt: skip


def _outputs(prediction: Any, names: list[str] | None) -> dict[str, Any]:
    """The response body: the declared output fields, or everything a user Module returned."""
    if isinstance(prediction, Mapping):
        values = dict(prediction)
    elif hasattr(prediction, "model_dump"):
        values = prediction.model_dump(mode="json")
    else:
        values = {"output": prediction}
    if names is not None:
        missing = [n for n in names if n not in values]
        if missing:
            raise RuntimeError(f"the program returned no {missing}")
        values = {n: values[n] for n in names}
    return to_jsonable(values)


def create_app(programs: Iterable[ServedProgram] | Mapping[str, Module], *, title: str = "oobleck", max_threads: int = 256,
               openai_compat: bool = True, preload: bool = True, max_body_bytes: int = 8 * 1024 * 1024,
               freeze_heap: bool = False) -> FastAPI:  # fmt: skip
    """A FastAPI app serving ``programs`` (``ServedProgram`` objects or ``{name: module}``).

    ``max_threads`` sizes the thread pool that runs synchronous work (user Modules' forward,
    in-process models): asyncio's default of a few threads would cap concurrency. With
    ``openai_compat``, every in-process Hugging Face model the programs use is also served at
    ``/v1/chat/completions``. ``preload`` loads those models at start-up rather than on the
    first request. A program request body larger than ``max_body_bytes`` is refused with 413.
    ``freeze_heap`` moves what exists once start-up is done out of the garbage collector's
    view (``gc.freeze``) for the life of the process: ``oobleck serve`` sets it, which took its
    p99 latency at 64 clients from 124-164 ms to 91-127 ms; leave it off in a process that
    does more than serve (tests, notebooks).
    """
    registry = Registry(programs)
    metrics = Metrics()
    hf_models = registry.hf_models()  # in-process models: preloaded, and served at /v1 with openai_compat

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="oobleck-serve")
        asyncio.get_running_loop().set_default_executor(executor)
        if preload:
            for lm in {id(lm): lm for lm in hf_models.values()}.values():
                await asyncio.to_thread(lm.load)
        logger.info("serving %d program(s): %s", len(registry), ", ".join(s.name for s in registry))
        if freeze_heap:
            # Everything alive now (modules, the app, programs, models) lives as long as the
            # server process: frozen, it is no longer rescanned by each full collection, a
            # pause of every request in flight. Process-wide, so only for a process that
            # exists to serve.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=title, version=__version__, lifespan=lifespan,
                  description="Compiled oobleck programs. Each `POST /programs/<name>` takes the program's input fields as JSON "
                              "and returns its output fields.")  # fmt: skip
    app.state.registry = registry
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
        named = "; ".join(_describe_error(e) for e in detail) or "invalid request"
        endpoint = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.error(endpoint, "invalid_request")
        if request.url.path.startswith("/v1/"):
            from oobleck.serve.openai_compat import openai_error

            return openai_error(request, 400, "invalid_request_error", named, param=_first_field(detail))
        return error_response(request, 422, "invalid_request", named, detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode (not UTF-8, say): invalid input, named
            message = f"request body could not be read: {exc.detail}"
            metrics.error(getattr(request.scope.get("route"), "path", "unmatched"), "invalid_request")
            if request.url.path.startswith("/v1/"):
                from oobleck.serve.openai_compat import openai_error

                return openai_error(request, 400, "invalid_request_error", message)
            return error_response(request, 422, "invalid_request", message)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(request, exc.status_code, kind, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        logger.error("request %s failed", request_id_of(request), exc_info=exc)
        return error_response(request, 500, "internal_error", _INTERNAL)

    @app.get("/healthz", response_model=Health, tags=["server"])
    async def healthz() -> dict[str, Any]:
        """Liveness: the server is up and its programs are loaded."""
        return {"status": "ok", "programs": len(registry)}

    @app.get("/programs", response_model=ProgramList, tags=["programs"])
    async def list_programs() -> dict[str, Any]:
        """Every served program: its fields with their types, its predictors and their LMs."""
        return {"programs": [served.describe() for served in registry]}

    @app.get("/programs/{name}", tags=["programs"], responses={404: {"model": ErrorBody}})
    async def describe_program(name: str, request: Request) -> Any:
        """One served program's fields, predictors and LMs."""
        served = registry.programs.get(name)
        if served is None:
            return error_response(request, 404, "not_found", f"no program named {name!r}; serving {sorted(registry.programs)}")
        return served.describe()

    @app.get("/metrics", response_class=PlainTextResponse, tags=["server"])
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format: requests, latency histogram, LM calls and tokens, errors."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    taken: set[str] = set()
    for served in registry:
        _program_route(app, served, metrics, taken, max_body_bytes)

    @app.post("/programs/{name}", include_in_schema=False)
    async def unknown_program(name: str, request: Request) -> JSONResponse:
        return error_response(request, 404, "not_found", f"no program named {name!r}; serving {sorted(registry.programs)}")

    if openai_compat:
        from oobleck.serve.openai_compat import add_openai_routes

        add_openai_routes(app, hf_models, metrics)
    direct = {route.path: route for route in app.router.routes if isinstance(route, _ProgramRoute)}
    app.add_middleware(_RequestContext, metrics=metrics, direct=direct)
    return app


def _describe_error(entry: dict[str, Any]) -> str:
    if entry["type"] == "json_invalid":
        return f"request body is not valid JSON: {entry['msg']}"
    loc = [p for p in entry["loc"] if p != "body"]
    if not loc:
        return f"request body: {entry['msg']}"
    return f"field {'.'.join(loc)!r}: {entry['msg']}"


def _first_field(detail: list[dict[str, Any]]) -> str | None:
    for entry in detail:
        loc = [p for p in entry["loc"] if p != "body"]
        if loc:
            return ".".join(loc)
    return None
