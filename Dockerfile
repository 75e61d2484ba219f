# The embedding parameter service in a container.
#
#   docker build -t embedding-service .
#   docker run -p 127.0.0.1:8000:8000 -v embedding-data:/data embedding-service
#
# Stages: "build" installs the dependencies (the base ones and the `server` extra, no torch)
# into a virtual environment at /opt/venv and the project into /opt/app (its package data
# included: the files /docs and /redoc serve, no CDN needed), which a .pth file puts on the venv's
# path; "runtime" copies those two directories and nothing else (no sources, no pip, no
# setuptools). The last stage is the service; "trainer" is the word2vec example beside it.
# Kept apart, the big dependency layer is reused as long as pyproject.toml does not change: a
# code change rebuilds and ships a layer of about 4 MB (3 MB of it the API pages' files).
# Settings are EMBED_* environment variables (docs/configuration.md). Where the container's
# default differs from the service's it is set below: data in /data, and a snapshot of the changed
# tables every 60 s besides the one on shutdown (a killed container loses at most a minute).

# The unprivileged user the containers run as (numeric, the same in every stage).
ARG UID=10001

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
    && pip --python /opt/venv/bin/python install '.[server]' \
    && pip --python /opt/venv/bin/python uninstall --yes embedding-service \
    && echo /opt/app > /opt/venv/lib/python3.11/site-packages/embedding-service-app.pth \
    && rm -rf service build README.md *.egg-info

COPY README.md ./
COPY service ./service
RUN pip --python /opt/venv/bin/python install --no-deps --target /opt/app . \
    && rm -rf build


# The dependencies of cluster mode besides (the ray extra: docker-compose.cluster.yml's image),
# read from pyproject.toml as above.
FROM build AS build-cluster
WORKDIR /src-cluster
COPY pyproject.toml ./
RUN mkdir service && touch service/__init__.py README.md \
    && pip --python /opt/venv/bin/python install '.[ray]' \
    && pip --python /opt/venv/bin/python uninstall --yes embedding-service \
    && rm -rf service build README.md *.egg-info


# What every image shares: an unprivileged user and the virtual environment's interpreter.
FROM python:3.11-slim AS base
ARG UID
RUN groupadd --system --gid "$UID" embed \
    && useradd --uid "$UID" --gid embed --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin embed
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1


# What the service and the trainer share: the installed project.
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app


# The word2vec example as a client of the service (docker-compose --profile trainer;
# `docker build --target trainer`). It reaches the service at $EMBED_URL.
FROM runtime AS trainer
ARG UID
COPY examples /opt/app/examples
USER $UID:$UID
WORKDIR /tmp
CMD ["python", "-m", "examples.word2vec", "--no-plot"]


# Cluster mode (`docker build --target cluster`; docker-compose.cluster.yml): the service with
# Ray. One image for every part of a cluster: the Ray head, the Ray worker nodes where the shard
# servers run, and the fronts; the compose file gives each its command. The data directory is a
# volume all of them mount (the shards' snapshots must be where any node can read them).
FROM base AS cluster
ARG UID
COPY --from=build-cluster /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app
RUN mkdir /data /opt/numba-cache && chown "$UID:$UID" /data /opt/numba-cache
ENV EMBED_DATA_DIR=/data \
    EMBED_CLUSTER=ray \
    NUMBA_CACHE_DIR=/opt/numba-cache
USER $UID:$UID
RUN python -m service.core.kernels numba
WORKDIR /data
VOLUME /data
EXPOSE 8000 6379
CMD ["python", "-m", "service.api", "--host", "0.0.0.0", "--port", "8000"]


# The service: the last stage, so the one `docker build .` makes.
FROM runtime
ARG UID
# The data directory belongs to the service's user; the volume declared on it starts out
# owned by that user too. So does numba's cache of the compiled kernels (NUMBA_CACHE_DIR).
RUN mkdir /data /opt/numba-cache && chown "$UID:$UID" /data /opt/numba-cache
ENV EMBED_DATA_DIR=/data \
    EMBED_SNAPSHOT_INTERVAL_SECONDS=60 \
    NUMBA_CACHE_DIR=/opt/numba-cache
# Numeric, so that orchestrators that insist on a non-root user can check it.
USER $UID:$UID
# The kernels (service/core/kernels) compiled now, as that user, into its cache: the service
# loads them at start instead of compiling them. numba keys its cache by CPU model: on a machine
# other than the builder's the service compiles them at start (a few seconds, before it reports
# ready) and caches them for the next start.
RUN python -m service.core.kernels numba
WORKDIR /data
VOLUME /data
EXPOSE 8000

# No curl in the image: the interpreter that is there asks /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Exec form: the service (uvicorn, in-process) is PID 1 and gets SIGTERM itself, so the shutdown
# snapshot runs. Every start flag comes from the EMBED_* settings (service/api/server.py), as
# for `make serve`: one worker (the tables live in this process's memory), requests still
# running 20 s after SIGTERM cancelled (EMBED_GRACEFUL_SHUTDOWN_SECONDS), leaving the snapshot
# the rest of compose's 60 s grace period; connection bound and request deadlines; no uvicorn
# access log (the service logs each request as JSON).
CMD ["python", "-m", "service.api", "--host", "0.0.0.0", "--port", "8000"]
