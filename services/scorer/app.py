"""`fraud serve`: the FastAPI app. `create_app` and its lifespan are the composition root.

The lifespan builds the Feast store, the model holder (champion from the MLflow registry, polled and
hot-swapped), the Kafka audit publisher and the metrics, and hands them to the routes through
`services.scorer.deps`. Routes only parse, call the service and write the response. Errors never
carry a stack trace: 422 names the fields at fault, 500 is generic with a request id to grep the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fraud import features as F
from fraud.settings import ScorerSettings
from services.scorer import core, examples
from services.scorer.audit import AuditPublisher, unpublished_gauge
from services.scorer.deps import ApiKey, Service
from services.scorer.metrics import Metrics
from services.scorer.model_holder import MlflowChampion, ModelHolder, ModelSource
from services.scorer.online import OnlineFeatureReader, StoreUnavailable
from services.scorer.ratelimit import RateLimiter
from services.scorer.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorBody,
    ErrorField,
    ModelInfo,
    ScoreResponse,
    Status,
    TransactionRequest,
)
from services.scorer.service import ModelUnavailable, ScoringService

log = logging.getLogger(__name__)

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"  # the text exposition format, version 0.0.4
ROUTES = frozenset({"/v1/score", "/v1/score/batch", "/v1/model", "/healthz", "/readyz", "/metrics"})
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _json(body: Any, code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(content=body.model_dump_json(), status_code=code, media_type=JSON, headers=headers)


class EdgeMiddleware:
    """Pure ASGI: request id, body size limit (413 before the app runs), latency histogram."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        code = 500
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_wrapper(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    await _send_error(send_wrapper, 413, f"request body larger than {self.max_body} bytes", request_id)
                    return
                receive = _replay(body)
            await self.app(scope, receive, send_wrapper)
        finally:
            route = path if path in ROUTES else "other"
            self.metrics.latency.labels(route, str(code)).observe(time.perf_counter() - started)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        return None
                except ValueError:
                    return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _send_error(send: Send, code: int, message: str, request_id: str) -> None:
    body = ErrorBody(error=message, request_id=request_id).model_dump_json().encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _field(loc: tuple[Any, ...]) -> str:
    """A validation error location as a field path: ('body', 'transactions', 3, 'amount') -> transactions[3].amount."""
    parts = [p for p in loc if p not in ("body", "header", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = [
            ErrorField(field=_field(tuple(e.get("loc", ()))), message=str(e.get("msg", ""))) for e in exc.errors()
        ]
        return _json(ErrorBody(error="invalid request", fields=fields, request_id=_request_id(request)), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json(ErrorBody(error=str(exc.detail), request_id=_request_id(request)), exc.status_code, exc.headers)

    @app.exception_handler(ModelUnavailable)
    async def no_model(request: Request, exc: ModelUnavailable) -> Response:
        body = ErrorBody(error="no model loaded: not scoring", request_id=_request_id(request))
        return _json(body, status.HTTP_503_SERVICE_UNAVAILABLE, {"Retry-After": "5"})

    @app.exception_handler(StoreUnavailable)
    async def no_store(request: Request, exc: StoreUnavailable) -> Response:
        body = ErrorBody(error="online feature store unavailable", request_id=_request_id(request))
        return _json(body, status.HTTP_503_SERVICE_UNAVAILABLE, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        rid = _request_id(request)
        log.error("unhandled error (request %s)", rid, exc_info=exc)
        return _json(ErrorBody(error="internal error", request_id=rid), 500)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Every error a route can answer, with the body it has (`ErrorBody`; FastAPI's default 422 body is not ours).
Responses = dict[int | str, dict[str, Any]]
UNREADABLE: Responses = {400: _error("the body could not be read: not UTF-8 text")}
UNAUTHORIZED: Responses = {
    401: _error("missing or invalid API key (X-API-Key)"),
    429: _error(
        "request rate above the API key's limit (FRAUD_SCORER_CLIENT_RATE_LIMIT, per API key); see Retry-After"
    ),
}
INVALID: Responses = {422: _error("invalid request: `fields` names each field at fault")}
TOO_LARGE: Responses = {413: _error("request body larger than FRAUD_SCORER_MAX_BODY_BYTES")}
UNAVAILABLE: Responses = {
    503: _error("no model loaded, or the online store down (FRAUD_SCORER_STORE_DOWN=unavailable)")
}
SCORING_ERRORS: Responses = {**UNREADABLE, **UNAUTHORIZED, **TOO_LARGE, **INVALID, **UNAVAILABLE}
SCORED: Responses = {200: {"content": {"application/json": {"examples": examples.RESPONSES}}}}
SCORED_OR_INVALID: Responses = {
    **SCORED,
    422: INVALID[422] | {"content": {"application/json": {"examples": examples.INVALID_RESPONSE}}},
}


def _install_routes(app: FastAPI) -> None:
    @app.post("/v1/score", response_model=ScoreResponse, responses={**SCORING_ERRORS, **SCORED_OR_INVALID})
    async def score(
        txn: Annotated[TransactionRequest, Body(openapi_examples=examples.REQUESTS)],
        service: Service,
        client: ApiKey,
        explain: bool = False,
    ) -> Response:
        """Score one transaction: calibrated fraud probability, decision and reason codes.

        Reason codes come with every review and decline; `explain=true` asks for them on an approval too."""
        (result,) = await service.score([txn], explain)
        return _json(ScoreResponse.of(result))

    @app.post("/v1/score/batch", response_model=BatchResponse, responses=SCORING_ERRORS)
    async def score_batch(batch: BatchRequest, service: Service, client: ApiKey, explain: bool = False) -> Response:
        """Score up to FRAUD_SCORER_BATCH_MAX transactions in one call."""
        limit = service.settings.scorer_batch_max
        if len(batch.transactions) > limit:
            field = ErrorField(field="transactions", message=f"at most {limit} transactions per batch")
            return _json(ErrorBody(error="invalid request", fields=[field]), 422)
        results = await service.score(batch.transactions, explain)
        version = results[0].model_version if results else ""
        return _json(BatchResponse(model_version=version, results=[ScoreResponse.of(r) for r in results]))

    @app.get("/v1/model", response_model=ModelInfo, responses={**UNAUTHORIZED, **INVALID, **UNAVAILABLE})
    async def model(service: Service, client: ApiKey) -> Response:
        """The model serving traffic."""
        current = service.holder.current
        if current is None:
            raise ModelUnavailable("no model loaded")
        s = service.settings
        info = ModelInfo(
            name=s.scorer_model_name,
            alias=s.scorer_model_alias,
            version=current.version,
            run_id=current.run_id,
            loaded_at=current.loaded_at,
            thresholds=current.thresholds,
            feature_count=len(current.feature_names),
        )
        return _json(info)

    @app.get("/healthz", response_model=Status)
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return _json(Status(status="ok"))

    @app.get("/readyz", response_model=Status, responses={503: {"model": Status, "description": "not ready"}})
    async def readyz(service: Service) -> Response:
        """Readiness: a model is loaded (and the online store is up when a down store means 503)."""
        current = service.holder.current
        if not service.ready:
            detail = "no model loaded" if current is None else "online feature store unavailable"
            return _json(Status(status="not ready", detail=detail), 503)
        note = None if service.reader.healthy else "online store down: scoring degraded"
        return _json(Status(status="ready", detail=note, model_version=current.version if current else None))

    @app.get(
        "/metrics",
        response_class=Response,  # no JSON: the one documented body is the one below
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4",
                "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics(service: Service) -> Response:
        """Prometheus metrics."""
        return Response(service.metrics.exposition(), media_type=PROMETHEUS)


def create_app(
    settings: ScorerSettings | None = None,
    *,
    model_source: ModelSource | None = None,
    store: Any | None = None,
) -> FastAPI:
    """The scorer app. Tests may pass settings, a model source or a Feast store; defaults come from env."""
    settings = settings or ScorerSettings()
    metrics = Metrics.create()
    audit_unpublished = unpublished_gauge(metrics.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from fraud.store import open_store

        if not settings.scorer_api_keys:
            raise RuntimeError("no API keys configured: set FRAUD_SCORER_API_KEYS (comma-separated)")
        app.state.api_keys = [k.get_secret_value().encode() for k in settings.scorer_api_keys]
        if any(k.startswith(b"demo-only-") for k in app.state.api_keys):
            log.warning("an API key is a demo-only default (docker-compose.yml): set FRAUD_SCORER_API_KEYS in .env")
        rate = settings.scorer_client_rate_limit
        app.state.rate_limiter = (
            RateLimiter(rate, max(rate * settings.scorer_client_burst_seconds, 1.0)) if rate else None
        )
        feast = store if store is not None else await asyncio.to_thread(open_store, settings)
        reader = await asyncio.to_thread(
            OnlineFeatureReader, feast, settings.scorer_store_timeout_ms / 1000.0, settings.scorer_store_retry_seconds
        )
        if not await asyncio.to_thread(reader.warm_up):
            log.warning("online store unreachable at start: scoring %s", settings.scorer_store_down)
        source = model_source
        if source is None:
            source = await asyncio.to_thread(
                MlflowChampion,
                settings.tracking_uri,
                settings.scorer_model_name,
                settings.scorer_model_alias,
                request_timeout_s=settings.scorer_registry_timeout_seconds,
                max_retries=settings.scorer_registry_retries,
            )
        holder = ModelHolder(
            source,
            F.model_feature_names(),
            retry_min_s=settings.scorer_model_retry_min_seconds,
            retry_max_s=settings.scorer_model_retry_max_seconds,
        )
        if await asyncio.to_thread(holder.refresh):
            metrics.model_swaps.inc()
        metrics.model_loaded.set(1 if holder.current is not None else 0)
        audit = None
        if settings.scorer_audit_enabled:
            audit = AuditPublisher(
                settings.kafka_bootstrap_servers,
                settings.scorer_audit_topic,
                settings.scorer_audit_spool_dir or settings.data_dir / "scorer" / "audit-spool",
                settings.scorer_audit_queue_max,
                on_drop=metrics.audit_dropped.inc,
                on_error=metrics.audit_errors.inc,
                on_pending=audit_unpublished.set,
                retry_max_s=settings.scorer_audit_retry_max_seconds,
                stall_s=settings.scorer_audit_stall_seconds,
            )
            audit.start()
        service = ScoringService(settings, holder, reader, metrics, audit)
        service.batcher.start()
        app.state.service = service

        def swapped() -> None:
            metrics.model_swaps.inc()
            metrics.model_loaded.set(1)

        # Everything loaded so far (Feast, MLflow, pandas, the model: ~400k objects) lives as long as the
        # process. Left to the collector, each full collection walks it all (~300 ms measured here),
        # stalling every request in the worker; frozen, it is never walked again.
        await asyncio.to_thread(core.warm_up, holder.current)  # the scoring path's one-off costs, frozen too
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(holder.watch(settings.scorer_poll_seconds, swapped), name="champion-watch")
        log.info(
            "scorer ready on model %s (audit to %s)",
            holder.current.version if holder.current else "none",
            settings.scorer_audit_topic if audit else "nowhere",
        )
        try:
            yield
        finally:
            watcher.cancel()
            gc.unfreeze()
            await service.stop()
            if audit is not None:
                await asyncio.to_thread(audit.close)
            reader.close()

    app = FastAPI(
        title="crypto-fraud-detection scorer",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    _install_error_handlers(app)
    _install_routes(app)
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.scorer_max_body_bytes, metrics=metrics)
    return app


def worker_app() -> FastAPI:
    """The uvicorn factory of each worker process: logging, then the app from FRAUD_* settings."""
    from fraud.logs import setup_logging

    settings = ScorerSettings()
    setup_logging(settings.log_level, settings.log_json)
    return create_app(settings)


def serve(settings: ScorerSettings) -> None:
    """Run uvicorn with `scorer_workers` processes on `scorer_host:scorer_port`."""
    import os
    import shutil
    import tempfile

    import uvicorn

    if not settings.scorer_api_keys:
        raise SystemExit("no API keys configured: set FRAUD_SCORER_API_KEYS (comma-separated)")
    # One LightGBM thread per worker: the workers already use the cores, more threads only contend.
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.scorer_lgbm_threads))
    own_dir = None
    if settings.scorer_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="fraud-scorer-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir  # inherited by the spawned workers
    log.info(
        "serving on http://%s:%d with %d worker(s)", settings.scorer_host, settings.scorer_port, settings.scorer_workers
    )
    try:
        uvicorn.run(
            "services.scorer.app:worker_app",
            factory=True,
            host=settings.scorer_host,
            port=settings.scorer_port,
            workers=settings.scorer_workers,
            loop="uvloop",
            http="httptools",
            access_log=settings.scorer_access_log,
            log_config=None,
            timeout_graceful_shutdown=10,
        )
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
