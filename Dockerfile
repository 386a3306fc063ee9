# mailbox-worker: the daemon in a small Debian image (docs/deploy.md).
# Build anywhere with `docker build -t mailbox-worker .`; on a host without a registry,
# `make image` builds it with podman (scripts/image).

# -- build: a virtual environment from the hashed lock, then the project itself ------------------
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/mailbox-worker
ENV PATH=/opt/mailbox-worker/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements/runtime.txt /src/requirements/runtime.txt
# A build secret `pip_ca` (a CA bundle) is used only when given: hosts whose HTTPS traffic is
# re-signed by a local authority pass theirs; it never lands in a layer.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && pip install --require-hashes --only-binary=:all: -r /src/requirements/runtime.txt
COPY pyproject.toml README.md /src/
COPY mailbox_worker /src/mailbox_worker
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && pip install --no-deps /src \
 && python -m pip uninstall --yes --quiet pip setuptools \
 && python -m compileall -q /opt/mailbox-worker

# -- run: Debian's Python and the environment, no compilers, no pip run, a user of its own ------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --home-dir /var/lib/mailbox-worker --uid 10001 --shell /usr/sbin/nologin mailbox-worker \
 && install -d -o mailbox-worker -m 0700 /etc/mailbox-worker/keys
COPY --from=build /opt/mailbox-worker /opt/mailbox-worker
COPY config/mailbox-worker.toml /etc/mailbox-worker/mailbox-worker.toml
ENV PATH=/opt/mailbox-worker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MAILBOX_WORKER_CONFIG=/etc/mailbox-worker/mailbox-worker.toml \
    MAILBOX_WORKER_SERVER__HOST=0.0.0.0 \
    MAILBOX_WORKER_DATABASE__URL=sqlite+aiosqlite:////var/lib/mailbox-worker/mailbox-worker.db \
    MAILBOX_WORKER_KEYS__SOURCE=file \
    MAILBOX_WORKER_KEYS__FILE=/etc/mailbox-worker/keys/keys.json \
    MAILBOX_WORKER_LOGGING__JSON=true
USER mailbox-worker
WORKDIR /var/lib/mailbox-worker
# The database (SQLite) and the key file live apart: a backup of one must not hold the other
# (docs/erasure.md). With PostgreSQL only the keys need a volume, or MAILBOX_WORKER_KEYS.
VOLUME ["/var/lib/mailbox-worker", "/etc/mailbox-worker/keys"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, sys, urllib.request; port = os.environ.get('MAILBOX_WORKER_SERVER__PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
# Exec form: the daemon is PID 1's only child-free process and receives SIGTERM itself, so it
# drains in-flight jobs (worker.shutdown_grace) and exits 0.
ENTRYPOINT ["mailbox-worker"]
CMD ["serve"]
