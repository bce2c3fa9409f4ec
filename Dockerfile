FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY bank_adapters ./bank_adapters
COPY schemas ./schemas
RUN pip install --no-cache-dir .
# The embedded PostgreSQL refuses to run as root; compose supplies DATABASE_URL anyway.
RUN useradd --create-home kanal
USER kanal
EXPOSE 8080 8583
CMD ["kanal", "serve"]
