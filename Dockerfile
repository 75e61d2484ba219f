# The embedding parameter service in a container.
#
#   docker build -t embedding-service .
#   docker run -p 127.0.0.1:8000:8000 -v embedding-data:/data embedding-service
#
# Two stages: "build" installs the project into a virtual environment at /opt/venv; the runtime
# stage copies that environment and nothing else (no compiler caches, no sources, no pip).
# Settings are EMBED_* environment variables (README, "Configuration").

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in a layer of their own: it depends on pyproject.toml alone, so editing
# the code or the README rebuilds only the small layer below. The stub package and README
# only let pip read the metadata; the real ones replace them next.
COPY pyproject.toml ./
RUN mkdir service && touch service/__init__.py README.md \
    && pip install . \
    && pip uninstall --yes embedding-service \
    && rm -rf service build README.md *.egg-info

COPY README.md ./
COPY service ./service
# The project itself (base dependencies only, no torch), then the installers the runtime
# does not need.
RUN pip install --no-deps . \
    && pip uninstall --yes pip setuptools


FROM python:3.11-slim

# One unprivileged user owns the data directory; the volume declared on it starts out
# owned by that user too.
ARG UID=10001
RUN groupadd --system --gid "$UID" embed \
    && useradd --uid "$UID" --gid embed --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin embed \
    && mkdir /data && chown embed:embed /data

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EMBED_DATA_DIR=/data

# Numeric, so that orchestrators that insist on a non-root user can check it.
USER $UID:$UID
WORKDIR /data
VOLUME /data
EXPOSE 8000

# No curl in the image: the interpreter that is there asks /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Exec form: uvicorn is PID 1 and gets SIGTERM itself, so the shutdown snapshot runs.
# One worker: the tables live in this process's memory; more workers would split them.
CMD ["uvicorn", "service.api.main:app", "--host", "0.0.0.0", "--port", "8000", \
     "--workers", "1", "--loop", "uvloop", "--http", "httptools"]
