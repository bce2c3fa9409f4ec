"""A third-party adapter, written against bank_adapters.base alone, installed as
its own distribution, is found through the entry-point group and serves."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import aiohttp

from bank_adapters.base import ENTRY_POINT_GROUP
from bank_adapters.registry import discover
from gateway.runtime import Gateway
from tests.conftest import test_settings

PLUGIN = '''
from aiohttp import web

from bank_adapters.base import AdapterContext, InquiryOutcome


class EchoAdapter:
    """Answers GET /echobank/bills/{code} from the payments port."""

    name = "echobank"
    migrations_dir = None

    def http_app(self, context: AdapterContext):
        app = web.Application()

        async def bill(request):
            result = await context.payments.inquire(request.match_info["code"])
            return web.json_response({"outcome": str(result.outcome), "amount": result.amount_rupiah})

        app.router.add_get("/bills/{code}", bill)
        return app

    async def start(self, context):
        self.started = True

    async def stop(self):
        pass


def adapter_factory():
    return EchoAdapter()
'''


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


async def test_installed_plugin_is_registered_and_serving(tmp_path, database_url, bills, clock):
    (tmp_path / "echobank").mkdir()
    (tmp_path / "echobank" / "__init__.py").write_text(PLUGIN)
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "kanal-echobank-test-plugin"
        version = "0.0.1"
        [project.entry-points."{ENTRY_POINT_GROUP}"]
        echobank = "echobank:adapter_factory"
        [tool.setuptools]
        packages = ["echobank"]
    """))
    pip("install", "--no-deps", "--no-build-isolation", str(tmp_path))
    try:
        importlib.invalidate_caches()
        assert "echobank" in discover()
        bill = await bills.create()
        gateway = Gateway(settings=test_settings(), database_url=database_url, clock=clock)
        await gateway.start(migrate_first=False)
        try:
            assert "echobank" in [a.name for a in gateway.adapters]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{gateway.url}/echobank/bills/{bill.payment_code}") as r:
                    assert r.status == 200
                    assert await r.json() == {"outcome": "open", "amount": bill.total_rupiah}
        finally:
            await gateway.stop()
    finally:
        pip("uninstall", "-y", "kanal-echobank-test-plugin")
        importlib.invalidate_caches()
    assert "echobank" not in discover()
