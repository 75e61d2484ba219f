"""Which format a request is in, and which the reply should be in."""

from __future__ import annotations

from starlette.requests import Request

from service.api.codecs import JSON, NPY, NPZ
from service.api.errors import NotAcceptable, UnsupportedMediaType


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header value: "application/x-npy; v=1" -> its first
    part, lowercased."""
    return content_type.split(";")[0].strip().lower()


def request_format(request: Request, *binary: str) -> str:
    """JSON or one of the endpoint's binary types (NPY, NPZ); 415 for anything else. A body
    without Content-Type is read as JSON."""
    return format_of_content_type(request.headers.get("content-type", ""), *binary)


def format_of_content_type(content_type: str, *binary: str) -> str:
    """request_format from the Content-Type header's value."""
    media = media_type(content_type)
    if media in ("", JSON):
        return JSON
    if media in binary:
        return media
    offered = [repr(kind) for kind in dict.fromkeys((JSON, *binary))]  # each once, in order
    choices = f"{', '.join(offered[:-1])} or {offered[-1]}" if len(offered) > 1 else offered[0]
    raise UnsupportedMediaType(f"Content-Type {media!r} is not supported here; send {choices}")


def reply_format(request: Request, request_fmt: str, offered: tuple[str, ...] = (JSON, NPY)) -> str:
    """The reply's format follows Accept; with no Accept (or */*), the request's own format."""
    return format_of_accept(request.headers.get("accept", ""), request_fmt, offered)


def format_of_accept(accept: str, request_fmt: str, offered: tuple[str, ...] = (JSON, NPY)) -> str:
    """reply_format from the Accept header's value."""
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if not wanted or "*/*" in wanted or "application/*" in wanted:
        return request_fmt if request_fmt in offered else offered[0]
    for media in wanted:
        if media in offered:
            return media
    raise NotAcceptable(
        f"Accept {accept!r} cannot be served here; this endpoint offers {list(offered)}"
    )


__all__ = [
    "JSON", "NPY", "NPZ", "format_of_accept", "format_of_content_type", "media_type",
    "reply_format", "request_format",
]
