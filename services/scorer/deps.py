"""FastAPI dependencies of the scorer, as `Annotated` aliases: the service and the API-key check."""

from __future__ import annotations

import hmac
import math
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from services.scorer.ratelimit import RateLimiter
from services.scorer.service import ScoringService


async def get_service(request: Request) -> ScoringService:
    """The scoring service built by the lifespan (the composition root).

    Both dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
    pool, a thread hop per request that cost more than the check itself."""
    service: ScoringService = request.app.state.service
    return service


# The OpenAPI security scheme of every scoring route: `/docs` gets "Authorize", and "Try it out" sends
# the key. The check itself is ours (below): constant time, several keys, a rate limit per key.
API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="one of FRAUD_SCORER_API_KEYS (`make demo`: demo-key; `docker compose up` without .env: demo-only-key)",
    auto_error=False,
)


async def require_api_key(request: Request, x_api_key: Annotated[str | None, Security(API_KEY)] = None) -> str:
    """Check `X-API-Key` against the configured keys in constant time; 401 without a valid one, 429 past
    the key's request rate (`services.scorer.ratelimit`). Several keys are valid at once (rotation).

    Returns which key matched ("key-1", ...), never the key itself.
    """
    keys: list[bytes] = request.app.state.api_keys
    given = (x_api_key or "").encode()
    matched = 0
    for i, key in enumerate(keys, start=1):
        if hmac.compare_digest(key, given) and not matched:  # every key is compared: no early exit
            matched = i
    if not x_api_key or not matched:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key (X-API-Key)",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    client = f"key-{matched}"
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and (wait := limiter.take(client)) > 0:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"request rate above this API key's limit ({limiter.rate:g}/s): retry after {wait:.2f}s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return client


Service = Annotated[ScoringService, Depends(get_service)]
ApiKey = Annotated[str, Depends(require_api_key)]
