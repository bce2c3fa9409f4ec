"""Reproducers from the independent review of d9d1e2c, "Callbacks at scale"
(migration 0022); each failed on d9d1e2c.

1. The 24-hour default window of the conformance report reached the CLI and
   the exports: `kanal conformance P --fail-on-error` without --since passed
   once a broken exchange was a day old, and "the whole report as a
   download" held the last day only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys

# ----------------------------------------------------------------------------
# The conformance report's default window.

_EXCHANGE = """
insert into partner_exchanges (at, channel, partner_id, service_code, path, external_id, request_body, answered,
                               http_status, response_code, rule, duration_ms)
values ($2, 'snap', $1, '25', '/v1.0/transfer-va/payment', $3, '{}', true, 200, '2002500', $4, 3.0)
"""


async def test_a_ci_gate_without_since_still_judges_every_exchange(callback_gateway, api, database_url):
    """`kanal conformance P --fail-on-error` (no --since) exited 1 when any
    exchange ever broke a rule; with d9d1e2c's 24-hour default it exits 0 once
    the broken exchange is a day old: a CI gate that turns green silently. The
    exports are "the whole report as a download" (docs/callbacks.md) and
    silently dropped the same exchange."""
    pool = callback_gateway.pool
    now = dt.datetime.now(dt.UTC)
    await pool.execute(_EXCHANGE, "BANKGATE", now - dt.timedelta(days=3), "1", "signature")  # broke a rule
    await pool.execute(_EXCHANGE, "BANKGATE", now - dt.timedelta(minutes=5), "2", None)  # passed

    env = {**os.environ, "DATABASE_URL": database_url}
    cli = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "conformance", "BANKGATE", "--fail-on-error", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert cli.returncode == 1, (cli.returncode, cli.stderr)
    assert json.loads(cli.stdout)["summary"]["exchanges"] == 2

    for export in ("conformance.json",):
        data = await api("GET", f"/api/v1/partners/BANKGATE/{export}", expect=200)
        assert (data["since"], data["summary"]["exchanges"], data["summary"]["conformant"]) == (None, 2, False)
    html = await api("GET", "/api/v1/partners/BANKGATE/conformance.html", expect=200)
    assert "1 exchange(s) broke a rule" in html

    # The browsable page keeps its 24-hour default, and says so.
    page = await api("GET", "/api/v1/partners/BANKGATE/conformance", expect=200)
    assert page["summary"]["exchanges"] == 1
    since = dt.datetime.fromisoformat(page["since"])
    assert dt.timedelta(hours=23, minutes=59) < now - since < dt.timedelta(hours=24, minutes=1)
    assert page["until"] is None
