"""The FastAPI application of `palrm serve` (see docs/architecture.md, "Reward service").

Endpoints: POST /v1/reward, POST /v1/compare, POST /v1/users/{user_id}/adapt, GET /v1/users/{user_id},
POST /v1/users/{user_id}/next-query,
POST /get_reward (OpenRLHF's remote reward model protocol), GET /healthz, and the OpenAPI docs
(/docs, /openapi.json). Bad requests always get a 4xx with a one-line `detail`, never a traceback.
"""

import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from palrm.errors import PalrmError, UnknownUserError
from palrm.serve.engine import Item, QueueFull, RewardEngine, UnknownPool, sigmoid
from palrm.version import __version__

logger = logging.getLogger(__name__)

HARD_MAX_LIST = 100_000  # schema-level caps; the configurable limits are checked in the handlers
HARD_MAX_TEXT = 1_000_000
USER_ID_RE = r"^[^\x00-\x1f\x7f]{1,256}$"

__all__ = ["create_app"]


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid UTF-8 (it holds a lone surrogate)") from None
    return text


Text = Annotated[str, Field(max_length=HARD_MAX_TEXT), AfterValidator(_utf8)]
UserId = Annotated[str, Field(min_length=1, max_length=256, pattern=USER_ID_RE), AfterValidator(_utf8)]
Weight = Annotated[float, Field(allow_inf_nan=False)]
WeightsSpec = Annotated[list[Weight], Field(min_length=1, max_length=1024)] | Annotated[str, Field(max_length=64, pattern=r"^(population|group:\d{1,6})$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Who(_Strict):
    user_id: UserId | None = Field(None, description="a user the model knows (trained or onboarded with adapt)")
    weights: WeightsSpec | None = Field(None, description="instead of user_id: K mixture weights, 'population' or 'group:k'")

    @model_validator(mode="after")
    def _one(self):
        if self.user_id is not None and self.weights is not None:
            raise ValueError("give either 'user_id' or 'weights', not both")
        return self


Risk = Annotated[str, Field(max_length=32, pattern=r"^(mean|quantile:0?\.[0-9]{1,6})$")]


class RewardItem(_Who):
    aggregate: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="instead of user_id / weights: one reward for the population, e.g. 'maxmin', 'mean', 'alpha:1', "
                          "'softmin:0.5', 'quantile:0.1@users' (palrm.aggregate)")
    prompt: Text = Field("", description="the prompt (may be empty for prompt-free data)")
    response: Text
    std: bool = Field(False, description="also return the reward's standard deviation under the user's weight posterior "
                                         "(the response then has 'stds'; rewards are posterior means)")
    risk: Risk | None = Field(None, description="'mean' (posterior mean) or 'quantile:Q' (the Q-quantile of the reward under "
                                                "the user's weight posterior, e.g. quantile:0.1: a risk-averse reward)")

    @model_validator(mode="after")
    def _one_of_three(self):
        if self.aggregate is not None and (self.user_id is not None or self.weights is not None):
            raise ValueError("give one of 'user_id', 'weights' or 'aggregate', not more")
        if self.aggregate is not None and (self.std or self.risk is not None):
            raise ValueError("'std' and 'risk' are about a user's weight posterior; an 'aggregate' item has neither")
        return self


class CompareItem(_Who):
    prompt: Text = ""
    response_a: Text
    response_b: Text


class RewardRequest(_Strict):
    items: Annotated[list[RewardItem], Field(min_length=1, max_length=HARD_MAX_LIST)]
    normalize: bool | None = Field(None, description="(r - mean) / std with the model's reference statistics; "
                                                     "default: the server's --normalize")


class CompareRequest(_Strict):
    items: Annotated[list[CompareItem], Field(min_length=1, max_length=HARD_MAX_LIST)]


class Pair(_Strict):
    prompt: Text = ""
    chosen: Text
    rejected: Text


class AdaptRequest(_Strict):
    pairs: Annotated[list[Pair], Field(min_length=1, max_length=HARD_MAX_LIST)]


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward model request: `query` = prompt + response as the policy saw it."""

    model_config = ConfigDict(extra="ignore")
    query: Annotated[list[Text], Field(min_length=1, max_length=HARD_MAX_LIST)]
    prompts: Annotated[list[Text], Field(max_length=HARD_MAX_LIST)] | None = None
    labels: Annotated[list[Annotated[str, Field(max_length=256), AfterValidator(_utf8)] | int | None],
                      Field(max_length=HARD_MAX_LIST)] | None = None


class RewardResponse(BaseModel):
    rewards: list[float]
    stds: list[float] | None = Field(None, description="per item, when any item asked for 'std' or a 'risk' (0 for explicit weights)")


class PoolPair(_Strict):
    prompt: Text = ""
    response_a: Text
    response_b: Text


class NextQueryRequest(_Strict):
    pool: Annotated[list[PoolPair], Field(max_length=HARD_MAX_LIST)] | None = Field(
        None, description="candidate pairs the user has not judged (the order of the two responses does not matter)")
    pool_id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="instead of 'pool': a pool the server loaded at start (palrm serve --query-pool ID=FILE)")
    n: int = Field(1, ge=1, le=100, description="how many pairs to return, best first")

    @model_validator(mode="after")
    def _one(self):
        if (self.pool is None) == (self.pool_id is None):
            raise ValueError("give exactly one of 'pool' (a list of pairs) or 'pool_id'")
        return self


class Query(BaseModel):
    index: int = Field(description="the pair's position in the pool")
    prompt: str | None
    response_a: str
    response_b: str
    information_gain: float = Field(description="expected information about the user's weights (nats)")


class NextQueryResponse(BaseModel):
    user_id: str
    known: bool = Field(description="false: a new user, the questions are chosen from the prior")
    queries: list[Query]
    weights_mean: list[float] | None = None
    weights_std: list[float] | None = None
    uncertainty: float | None = None


class CompareResponse(BaseModel):
    probabilities: list[float] = Field(description="P(response_a preferred over response_b) per item")


class UserResponse(BaseModel):
    user_id: str
    weights: list[float]
    version: int = Field(description="how many adapts the store holds for this user (0: only trained)")
    source: Literal["model", "store"] | None = None
    n_pairs: int | None = None
    n_pairs_adapted: int | None = None
    weights_mean: list[float] | None = Field(None, description="posterior mean of the weights (when the model has the user's posterior)")
    weights_std: list[float] | None = None
    uncertainty: float | None = Field(None, description="sqrt(sum_k Var[w_k]) under the posterior: 0 = certain")


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    detail: str


bearer = HTTPBearer(auto_error=False, description="the token in the server's --token-file")

_ERRORS = {c: {"model": ErrorResponse} for c in (401, 404, 413, 422, 503)}


# ---------------------------------------------------------------------------------------------- middleware
class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over `max_bytes` (declared or streamed), before any parsing."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _send_error(send, 400, "invalid Content-Length header")
            if int(declared) > self.max_bytes:
                return await _send_error(send, 413, self._too_big())
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await _send_error(send, 413, self._too_big())
            if not message.get("more_body", False):
                break
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_big(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (--max-body-bytes); split it into smaller requests"


async def _send_error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# ---------------------------------------------------------------------------------------------- app
def create_app(engine: RewardEngine) -> FastAPI:
    s = engine.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(
        title="palrm reward service",
        version=__version__,
        description=("Personalized rewards from a PAL model: score responses for a user or a mixture, compare two "
                     "responses, onboard users from a few pairs; OpenRLHF-compatible /get_reward."
                     + (" Every endpoint but /healthz needs `Authorization: Bearer <token>`." if s.token else "")),
        lifespan=lifespan,
    )
    async def auth(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if s.token is None:
            return
        given = (creds.credentials if creds else "").encode("utf-8", "surrogatepass")
        if not creds or not hmac.compare_digest(given, s.token.encode("utf-8")):
            raise HTTPException(401, "missing or wrong bearer token: send the header 'Authorization: Bearer <token>' "
                                     "with the token from the server's --token-file", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.exception_handler(UnknownPool)
    async def _unknown_pool(request: Request, exc: UnknownPool):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(UnknownUserError)
    async def _unknown(request: Request, exc: UnknownUserError):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(PalrmError)
    async def _palrm(request: Request, exc: PalrmError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged by the server)"}, status_code=500)

    def check_count(n: int, what: str, limit: int, flag: str) -> None:
        if n > limit:
            raise HTTPException(413, f"{n} {what} in one request; the limit is {limit} ({flag}): split the request")

    def check_texts(*texts: str) -> None:
        for t in texts:
            if len(t) > s.max_text_chars:
                raise HTTPException(413, f"a text of {len(t)} characters; the limit is {s.max_text_chars} (--max-text-chars)")

    def resolve(item: _Who) -> tuple[str | None, Any]:
        return engine.resolve(item.user_id, item.weights)

    @app.post("/v1/reward", response_model=RewardResponse, dependencies=guarded, responses=_ERRORS,
              summary="rewards r(user, prompt, response)")
    async def reward(body: RewardRequest) -> RewardResponse:
        check_count(len(body.items), "items", s.max_items, "--max-items")
        items = []
        for it in body.items:
            check_texts(it.prompt, it.response)
            if it.aggregate is not None:
                items.append(Item(None, None, it.prompt, it.response, engine.resolve_aggregate(it.aggregate)))
                continue
            user, w = resolve(it)
            items.append(Item(user, w, it.prompt, it.response, std=it.std, risk=it.risk))
        if any(it.std or it.risk is not None for it in items):
            rewards, stds = await engine.score_with_std(items)
            return RewardResponse(rewards=engine.normalized(rewards, body.normalize), stds=engine.normalized_std(stds, body.normalize))
        return RewardResponse(rewards=engine.normalized(await engine.score(items), body.normalize))

    @app.post("/v1/compare", response_model=CompareResponse, dependencies=guarded, responses=_ERRORS,
              summary="probability that response_a is preferred over response_b")
    async def compare(body: CompareRequest) -> CompareResponse:
        check_count(len(body.items), "items", s.max_items, "--max-items")
        items = []
        for it in body.items:
            check_texts(it.prompt, it.response_a, it.response_b)
            user, w = resolve(it)
            items += [Item(user, w, it.prompt, it.response_a), Item(user, w, it.prompt, it.response_b)]
        r = await engine.score(items)
        return CompareResponse(probabilities=[sigmoid(r[2 * i] - r[2 * i + 1]) for i in range(len(body.items))])

    @app.post("/v1/users/{user_id}/adapt", response_model=UserResponse, response_model_exclude_none=True, dependencies=guarded, responses=_ERRORS,
              summary="onboard a new user (or add data for a known one) from a few pairs")
    async def adapt(body: AdaptRequest, user_id: Annotated[str, Path(min_length=1, max_length=256, pattern=USER_ID_RE)]) -> UserResponse:
        _utf8(user_id)
        check_count(len(body.pairs), "pairs", s.max_pairs, "--max-pairs")
        for p in body.pairs:
            check_texts(p.prompt, p.chosen, p.rejected)
            if p.chosen == p.rejected:
                raise HTTPException(422, "a pair has chosen identical to rejected; every pair needs two different responses")
        out = await engine.adapt(user_id, [p.model_dump() for p in body.pairs])
        return UserResponse(**out)

    @app.post("/v1/users/{user_id}/next-query", response_model=NextQueryResponse, response_model_exclude_none=True,
              dependencies=guarded, responses=_ERRORS, summary="the most informative pair(s) to ask this user next")
    async def next_query(body: NextQueryRequest, user_id: Annotated[str, Path(min_length=1, max_length=256, pattern=USER_ID_RE)]) -> NextQueryResponse:
        _utf8(user_id)
        if body.pool is not None:
            if not body.pool:
                raise HTTPException(422, "the pool is empty: send at least one candidate pair "
                                         '{"prompt": ..., "response_a": ..., "response_b": ...}')
            check_count(len(body.pool), "pool pairs", s.max_pairs, "--max-pairs")
            for p in body.pool:
                check_texts(p.prompt, p.response_a, p.response_b)
        return NextQueryResponse(**await engine.run_model(engine.next_query_sync, user_id,
                                                          None if body.pool is None else [p.model_dump() for p in body.pool],
                                                          body.pool_id, body.n))

    @app.get("/v1/users/{user_id}", response_model=UserResponse, response_model_exclude_none=True, dependencies=guarded, responses=_ERRORS,
             summary="a user's mixture weights")
    async def get_user(user_id: Annotated[str, Path(min_length=1, max_length=256, pattern=USER_ID_RE)]) -> UserResponse:
        _utf8(user_id)
        return UserResponse(**await engine.run_model(engine.user_info_sync, user_id))

    @app.post("/get_reward", response_model=GetRewardResponse, dependencies=guarded, responses=_ERRORS,
              summary="OpenRLHF remote reward model protocol (--remote_rm_url http://HOST:PORT/get_reward)")
    async def get_reward(body: GetRewardRequest) -> GetRewardResponse:
        n = len(body.query)
        check_count(n, "queries", s.max_items, "--max-items")
        if body.prompts is not None and len(body.prompts) != n:
            raise HTTPException(422, f"'prompts' has {len(body.prompts)} entries for {n} queries; send one per query")
        if body.labels is not None and len(body.labels) != n:
            raise HTTPException(422, f"'labels' has {len(body.labels)} entries for {n} queries; send one user id per query")
        items = []
        for i, q in enumerate(body.query):
            prompt = body.prompts[i] if body.prompts is not None else ""
            check_texts(q, prompt)
            response = q[len(prompt):] if prompt and q.startswith(prompt) else q
            label = body.labels[i] if body.labels is not None else None
            if label in (None, "") and s.default_aggregate is not None:
                items.append(Item(None, None, prompt, response, s.default_aggregate))
                continue
            if label in (None, "") and s.default_user is None and s.default_weights is None and engine.has_users:
                raise HTTPException(422, f"query {i} has no user id: send it in 'labels' (OpenRLHF: --label_key "
                                         "with a dataset column of user ids), or start the server with --default-user "
                                         "ID / --default-weights population / --default-aggregate maxmin")
            user, w = engine.resolve(None if label in (None, "") else str(label), None)
            items.append(Item(user, w, prompt, response))
        r = engine.normalized(await engine.score(items), None)
        return GetRewardResponse(rewards=r, scores=r)

    @app.get("/healthz", summary="liveness and a few facts about the served model")
    async def healthz() -> dict:
        return {"status": "ok", "palrm_version": __version__, "kind": engine.model.net_.kind, "k": engine.k,
                "users": len(engine.model.users_), "encoder": engine.model.config_.encoder.spec,
                "batching": s.batching, "queued_items": engine.queued_items, "auth": s.token is not None,
                **engine.health()}

    app.add_middleware(BodyLimit, max_bytes=s.max_body_bytes)
    return app

