# syntax=docker/dockerfile:1
# One image for every learnstream role: docker-compose.yml runs it as anonymizer, store, trainer and serving
# (`learnstream up --roles R`). Written for people with Docker; it could not be built where learnstream is developed
# (no Docker daemon there): see README, "Operations".
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    LEARNSTREAM_DATA_DIR=/data

WORKDIR /app
# Only what the package needs: the build context may hold .venv, .learnstream and other local state.
COPY pyproject.toml requirements-nlp.txt ./
COPY learnstream learnstream
COPY schemas schemas
COPY producers producers
COPY consumers consumers
COPY trainer trainer
COPY serving serving
COPY ops ops

# The same install as `make install`, without the test tools. torch's CPU wheels: the default ones bring
# gigabytes of CUDA libraries no role uses here. The pip cache mount keeps rebuilds after a code change quick.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --extra-index-url https://download.pytorch.org/whl/cpu '.[ml,nlp]' \
 && pip install --no-deps --require-hashes -r requirements-nlp.txt

# Not root; /data (LEARNSTREAM_DATA_DIR: store, registry, trainer state) is owned by the service user, so a new
# named volume mounted there is writable.
RUN useradd --system --uid 10001 --home-dir /data learnstream \
 && mkdir -p /data && chown learnstream /data
USER learnstream
VOLUME /data

# 8000: serving's HTTP port (API and /metrics); 9464: /metrics of the other roles.
EXPOSE 8000 9464
ENTRYPOINT ["learnstream"]
CMD ["up"]
