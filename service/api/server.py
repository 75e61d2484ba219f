"""How the service is started: `python -m service.api [--host H] [--port P | --fd N]`.

The one place that holds the server's start flags, each taken from Settings (EMBED_* variables,
service.api.settings) so that every way of starting the service runs the same server:

- uvicorn with uvloop and httptools, one worker (the tables live in this process's memory);
- the graceful-shutdown bound (graceful_shutdown_seconds): on SIGTERM, requests still running
  then are cancelled, so the shutdown snapshot is always written;
- a connection bound and deadlines for a request's head and body (max_connections,
  request_*_timeout_seconds: service.api.connections), and the keep-alive timeout;
- no uvicorn access log (the service logs each request as one JSON line), and uvicorn's own
  messages as JSON lines too, at log_level;
- the soft limit on open files raised to the hard limit, so max_connections can be reached.

`make serve`, the Dockerfile, the word2vec example's --serve, bench/compare.py and the tests' live
servers start the service this way (the last three through service.api.process).
"""

from __future__ import annotations

import argparse
import gc
import logging
import resource
import socket
import sys

import uvicorn
import uvicorn.importer
from pydantic import ValidationError
from starlette.types import ASGIApp

from service.api.connections import ConnectionLimits, bounded_protocol
from service.api.logs import configure_logging
from service.api.settings import Settings, get_settings

log = logging.getLogger("service")
FILES_BESIDES_CONNECTIONS = 64  # snapshots, the log, the listening socket, libraries


def build_config(app: ASGIApp, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration of the service, every flag from `settings`. `app` is the
    service's (or, for a benchmark's floor, any ASGI app: connections the protocol closes are
    then counted nowhere)."""
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    limits = ConnectionLimits(
        max_connections=settings.max_connections,
        head_timeout=settings.request_head_timeout_seconds,
        body_timeout=settings.request_body_timeout_seconds,
        body_min_rate=settings.request_body_min_bytes_per_second,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=bounded_protocol(limits, metrics.count_closed_connection if metrics else ignore),
        workers=1,
        lifespan="on",
        access_log=False,
        log_config=None,  # configure_logging: JSON lines
        log_level=settings.log_level,
        # uvicorn annotates these int; it hands them to call_later and wait_for, which take floats
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,  # type: ignore[arg-type]
    )


def ignore(reason: str) -> None:
    """Where a closed connection's reason goes when the app has no metrics."""


def raise_file_limit(max_connections: int) -> None:
    """Soft RLIMIT_NOFILE up to the hard limit; a warning if max_connections cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if max_connections + FILES_BESIDES_CONNECTIONS > soft:
        log.warning("max_connections=%d does not fit in this process's limit of %d open files: "
                    "lower EMBED_MAX_CONNECTIONS or raise the limit (ulimit -n)",
                    max_connections, soft)


def settings_or_exit() -> Settings:
    """The settings, or one line per bad EMBED_* variable and exit status 2."""
    try:
        return get_settings()
    except ValidationError as error:
        for problem in error.errors():
            variable = "EMBED_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"refusing to start: {variable}={problem.get('input')!r}: {problem['msg']}",
                  file=sys.stderr)
        raise SystemExit(2) from None


def serve(host: str, port: int, fd: int | None = None, app_path: str | None = None) -> None:
    """Run the service until SIGTERM or SIGINT; on a listening socket's descriptor if `fd`.
    `app_path` ("module:attribute") serves another ASGI app on the same server configuration
    instead: what bench/load.py measures as the floor under the service."""
    settings = settings_or_exit()
    if app_path is None:
        from service.api.main import app  # built from the same (cached) settings
    else:
        app = uvicorn.importer.import_from_string(app_path)

    configure_logging(settings.log_level, "uvicorn")
    raise_file_limit(settings.max_connections)
    server = uvicorn.Server(build_config(app, settings, host, port))
    sockets = [socket.socket(fileno=fd)] if fd is not None else None
    if sockets is not None:
        host, port = sockets[0].getsockname()[:2]
    # What the imports and the app made lives as long as the process: the garbage collector's
    # full collections skip it from here on (they would walk all of it, a pause in whichever
    # request they fall on, for nothing to collect).
    gc.freeze()
    log.info("serving on http://%s:%d", host, port)
    server.run(sockets=sockets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.api",
        description="The embedding parameter service. Settings: EMBED_* environment variables.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    parser.add_argument("--fd", type=int, help="serve on this listening socket's file descriptor "
                        "instead (service.api.process hands one over)")
    parser.add_argument("--app", metavar="MODULE:ATTRIBUTE", help="serve this ASGI app instead "
                        "of the service, on the same server configuration (a benchmark's floor)")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.fd, args.app)
