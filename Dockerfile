# The embedding parameter service in a container.
#
#   docker build -t embedding-service .
#   docker run -p 127.0.0.1:8000:8000 -v embedding-data:/data embedding-service
#
# Two stages. "build" installs the dependencies into a virtual environment at /opt/venv and
# the project (base dependencies only, no torch) into /opt/app, which a .pth file puts on the
# venv's path; the runtime stage copies those two directories and nothing else (no sources,
# no pip, no setuptools). Kept apart, the big dependency layer is reused as long as
# pyproject.toml does not change: a code change rebuilds and ships a layer of a few hundred KB.
# Settings are EMBED_* environment variables (README, "Configuration"). Where the container's
# default differs from the service's it is set below: data in /data, and a snapshot of the changed
# tables every 60 s besides the one on shutdown (a killed container loses at most a minute).

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Without pip of its own: the base image's pip installs into it (pip --python).
RUN python -m venv --without-pip /opt/venv
WORKDIR /src

# The dependencies: a stub package and README stand in for the real ones, only so that pip can
# read the metadata; the layer then depends on pyproject.toml alone.
COPY pyproject.toml ./
RUN mkdir service && touch service/__init__.py README.md \
    && pip --python /opt/venv/bin/python install . \
    && pip --python /opt/venv/bin/python uninstall --yes embedding-service \
    && echo /opt/app > /opt/venv/lib/python3.11/site-packages/embedding-service-app.pth \
    && rm -rf service build README.md *.egg-info

COPY README.md ./
COPY service ./service
RUN pip --python /opt/venv/bin/python install --no-deps --target /opt/app . \
    && rm -rf build


FROM python:3.11-slim

# One unprivileged user owns the data directory; the volume declared on it starts out
# owned by that user too.
ARG UID=10001
RUN groupadd --system --gid "$UID" embed \
    && useradd --uid "$UID" --gid embed --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin embed \
    && mkdir /data && chown embed:embed /data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EMBED_DATA_DIR=/data \
    EMBED_SNAPSHOT_INTERVAL_SECONDS=60

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
