# huxue: one image for `huxue bridge` and `huxue worker` (see docker-compose.yml).
#   docker build -t huxue .
#   docker run --rm huxue --help
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HUXUE_HOME=/var/lib/huxue

# Unprivileged runtime user; HUXUE_HOME is its writable state directory (a volume in compose).
RUN groupadd --system --gid 10001 huxue \
 && useradd --system --uid 10001 --gid huxue --home-dir /var/lib/huxue --shell /usr/sbin/nologin huxue \
 && install -d -o huxue -g huxue -m 0750 /var/lib/huxue

# Only what the package build needs (the .dockerignore keeps the rest out of the context).
# README.m[d]: copied when present (pyproject names it), no error while it does not exist.
WORKDIR /tmp/huxue-src
COPY pyproject.toml README.m[d] ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir . \
 && cd / && rm -rf /tmp/huxue-src \
 && huxue --help >/dev/null

USER huxue
WORKDIR /var/lib/huxue
ENTRYPOINT ["huxue"]
CMD ["--help"]
