"""The service's middleware as one ASGI hop in front of FastAPI's routing.

Each layer is its own module and keeps its own rules; this class runs them in order, reading the
request's headers once (starlette's `Headers`) and its route once (`RouteTable`), instead of
each layer being an ASGI app that wraps the next one's receive and send:

1. observe (outermost: it sees every reply, refusals included): metrics and the access log;
2. auth (before anything reads the body: a stranger's body is never read): 401;
3. body limits: 413 for a declared length over the route's limit, counting for chunked bodies;
4. idempotency keys (only requests that reach the routes are remembered): only with a key;
5. the binary fast path for the routes that offer one, else FastAPI (routing, dependencies,
   the exception handlers of service.api.errors).

It also does what Starlette's ServerErrorMiddleware did in front of it: an exception nothing
answered gets a 500 ("Internal Server Error", text/plain, as before) and is raised on for the
server to log. A client that went away is no exception: 499 (408 if the server cut it off).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.datastructures import Headers, State
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.middleware.auth import BearerAuth
from service.api.middleware.fast_path import BinaryFastPath
from service.api.middleware.idempotency import Idempotency
from service.api.middleware.limits import BodyLimits, BodyTooLarge, too_large
from service.api.middleware.observe import CLIENT_CLOSED_REQUEST, TIMED_OUT, RequestObserver
from service.api.middleware.replies import ReplyStore
from service.api.middleware.routes import Resolved, RouteTable
from service.api.settings import Settings


class Outcome:
    """What the client has been sent so far: the status, once a reply has started."""

    __slots__ = ("status", "started")

    def __init__(self) -> None:
        self.status = 500  # what the client gets if the app raises before answering
        self.started = False

    def observing(self, send: Send) -> Send:
        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status, self.started = message["status"], True
            await send(message)

        return observing_send

    async def answer(self, reply: Response, scope: Scope, receive: Receive, send: Send) -> None:
        self.status, self.started = reply.status_code, True
        await reply(scope, receive, send)


class ServiceMiddleware:
    """Observe, auth, body limits, idempotency keys and the binary fast path, in one hop."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], state: State,
                 lifespan: ASGIApp | None = None) -> None:
        settings: Settings = state.settings
        self.app = app  # FastAPI's routing and exception handlers
        self.lifespan = lifespan or app  # where scopes other than HTTP go
        self.routes = RouteTable(routes)
        self.observer = RequestObserver(state.metrics)
        token = settings.token
        self.auth = BearerAuth(token.get_secret_value()) if token is not None else None
        self.limits = BodyLimits(settings)
        store: ReplyStore = state.idempotency
        self.idempotency = Idempotency(None, store) if store.max_keys else None
        self.fast_path = BinaryFastPath(state) if settings.binary_fast_path else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.lifespan(scope, receive, send)
            return
        started = time.perf_counter()
        resolved = self.routes.resolve(scope)
        outcome = Outcome()
        try:
            await self._serve(scope, receive, send, resolved, outcome)
        except ClientDisconnect:  # nobody is left to answer, and nothing went wrong here
            outcome.status = 408 if scope.get(TIMED_OUT) else CLIENT_CLOSED_REQUEST
        except BodyTooLarge as error:  # a chunked body over the limit that nothing answered
            if not outcome.started:
                await outcome.answer(too_large(error.detail), scope, receive, send)
        except Exception:
            if not outcome.started:
                await outcome.answer(PlainTextResponse("Internal Server Error", 500), scope,
                                     receive, send)
            raise
        finally:
            self.observer.record(scope, resolved, outcome.status, time.perf_counter() - started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, resolved: Resolved,
                     outcome: Outcome) -> None:
        headers = Headers(scope=scope)
        policy = resolved.policy
        if self.auth is not None and not policy.open:
            refusal = self.auth.refusal(headers)
            if refusal is not None:
                await outcome.answer(refusal, scope, receive, send)
                return
        refusal, length = self.limits.refusal(headers, policy)
        if refusal is not None:
            await outcome.answer(refusal, scope, receive, send)
            return
        if length is None:
            receive = self.limits.counting(receive, policy)
        key = self.idempotency.key_of(scope, headers) if self.idempotency is not None else None
        if key is not None:
            assert self.idempotency is not None

            async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
                await self._dispatch(scope, receive, send, resolved, headers, length, outcome)

            await self.idempotency.serve(scope, receive, outcome.observing(send), headers, key,
                                         dispatch)
            return
        await self._dispatch(scope, receive, send, resolved, headers, length, outcome)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, resolved: Resolved,
                        headers: Headers, length: int | None, outcome: Outcome) -> None:
        """The fast path's reply, or FastAPI's."""
        content_type = self.fast_path.takes(resolved, headers) if self.fast_path else None
        if content_type is None:
            await self.app(scope, receive, outcome.observing(send))
            return
        assert self.fast_path is not None
        reply = await self.fast_path.reply(scope, receive, resolved, headers, content_type,
                                           length)
        await outcome.answer(reply, scope, receive, send)
