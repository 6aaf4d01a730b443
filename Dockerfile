# The Tickerdash app image: one image, one service per command (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY simulator simulator
COPY analytics analytics
COPY dashboard dashboard
COPY tickerdash tickerdash
RUN pip install . && useradd --create-home tickerdash
USER tickerdash
ENTRYPOINT ["tickerdash"]
CMD ["--help"]
