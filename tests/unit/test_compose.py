"""The compose file must be right by construction: no Docker engine runs here,
so this test reads it and checks it against Kanal's own settings."""

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_gateway_environment_names_are_real_settings():
    env = load()["services"]["gateway"]["environment"]
    fields = {name.upper() for name in Settings.model_fields}
    for key in env:
        if key == "DATABASE_URL":
            continue
        assert key.startswith("KANAL_"), key
        assert key.removeprefix("KANAL_") in fields, f"{key} is not a Kanal setting"


def test_settings_parse_from_compose_environment(monkeypatch):
    env = load()["services"]["gateway"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.sandbox is True
    ports = load()["services"]["gateway"]["ports"]
    assert f"{settings.http_port}:{settings.http_port}" in ports
    assert f"{settings.iso8583_port}:{settings.iso8583_port}" in ports


def test_database_url_points_at_the_postgres_service():
    services = load()["services"]
    url = urlsplit(services["gateway"]["environment"]["DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert url.hostname == "postgres" and "postgres" in services
    assert url.username == pg["POSTGRES_USER"] and url.password == pg["POSTGRES_PASSWORD"]
    assert url.path == "/" + pg["POSTGRES_DB"]
    assert f"{url.port}:5432" in services["postgres"]["ports"]
    assert services["gateway"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_installs_every_package_and_runs_the_cli():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("gateway", "bank_adapters", "schemas"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'CMD ["kanal", "serve"]' in dockerfile
    assert load()["services"]["gateway"]["build"] == "."
