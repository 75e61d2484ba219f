"""Which format a request is in, and which the reply should be in."""

from __future__ import annotations

from starlette.requests import Request

from service.api.codecs import JSON, NPY, NPZ
from service.api.errors import NotAcceptable, UnsupportedMediaType


def request_format(request: Request, binary: str) -> str:
    """JSON or the endpoint's binary type (NPY or NPZ); 415 for anything else. A body without
    Content-Type is read as JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("", JSON):
        return JSON
    if content_type == binary:
        return binary
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not supported here; send {JSON!r} or {binary!r}"
    )


def reply_format(request: Request, request_fmt: str, offered: tuple[str, ...] = (JSON, NPY)) -> str:
    """The reply's format follows Accept; with no Accept (or */*), the request's own format."""
    accept = request.headers.get("accept", "")
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if not wanted or "*/*" in wanted or "application/*" in wanted:
        return request_fmt if request_fmt in offered else offered[0]
    for media in wanted:
        if media in offered:
            return media
    raise NotAcceptable(f"Accept {accept!r} cannot be served here; this endpoint offers {list(offered)}")


__all__ = ["JSON", "NPY", "NPZ", "reply_format", "request_format"]
