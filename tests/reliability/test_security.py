"""Attacks on the gateway, each asserting what a victim would notice:
another party's data, a flood, an oversized body, a replayed request, a
secret in a log, a signature compared in variable time, SQL built from text.

Covered elsewhere, and referenced by docs/reliability.md: employer routes
(tests/e2e/test_employer_api.py::test_an_employer_key_cannot_touch_another_employer),
a partner's token used by another (tests/snap/test_snap_tampering.py::
test_other_partners_token_is_refused), 429xx00 per service
(tests/snap/test_snap_codes.py::test_429xx00_rate_limited), the ISO 8583
frame limit (tests/iso8583/test_iso8583_e2e.py::
test_an_oversized_frame_answers_30_and_the_link_carries_on).
"""

from __future__ import annotations

import ast
import datetime as dt
import re
import uuid
from pathlib import Path

import aiohttp
import pytest

from bank_adapters.snap import protocol
from bank_adapters.snap.client import (
    INQUIRY_PATH,
    PAYMENT_PATH,
    STATUS_PATH,
    SnapClient,
    dumps,
)
from tests.e2e.test_employer_api import fingerprint
from tests.reliability.support import ADMIN_TOKEN, REPO, register_partner


async def posted(pool) -> int:
    return await pool.fetchval("select count(*) from payments where status = 'posted'")


@pytest.fixture
async def two_banks(gateway_server):
    clients = []
    for name in ("ALPHABANK", "BETABANK"):
        credentials = await register_partner(gateway_server.url, name, admin_token=gateway_server.admin_token)
        clients.append(SnapClient(gateway_server.url, credentials))
    yield clients
    for client in clients:
        await client.close()


# ------------------------------------------------------ another's data ----


async def test_one_bank_cannot_see_or_claim_another_banks_payment(gateway_server, two_banks, bills):
    alpha, beta = two_banks
    bill = await bills.create()
    paid = await alpha.pay(bill.payment_code, bill.total_rupiah, "alpha-0001")
    assert paid.code == "2002500"
    # Beta asks service 26 for Alpha's paymentRequestId: not found, nothing revealed.
    status = await beta.status(bill.payment_code, "alpha-0001")
    assert status.code == "4042601"
    assert "ALPHABANK" not in dumps(status.body) and str(bill.total_rupiah) not in dumps(status.body)
    # Beta repeating Alpha's payment id is a new payment of a paid bill, not a replay of Alpha's.
    claim = await beta.pay(bill.payment_code, bill.total_rupiah, "alpha-0001")
    assert claim.code == "4042514"
    assert "paymentId" not in dumps(claim.body)
    # Beta signing with Alpha's token (which it might have sniffed) is refused.
    body_text = dumps({**beta.virtual_account(bill.payment_code), "paymentRequestId": "alpha-0001"})
    headers = beta.signed(STATUS_PATH, body_text, await alpha.token())
    assert (await beta.send(STATUS_PATH, body_text, headers)).code == "4012601"
    assert await posted(gateway_server.pool) == 1


async def test_partner_administration_refuses_partner_tokens_employer_keys_and_hides_secrets(gateway_server, two_banks, bills):
    alpha, _ = two_banks
    bill = await bills.create()
    token = await alpha.token()
    async with aiohttp.ClientSession() as session:
        for credential in (token, bill.api_key, "", ADMIN_TOKEN + "x"):
            async with session.get(
                f"{gateway_server.url}/snap/admin/partners", headers={"Authorization": f"Bearer {credential}"}
            ) as response:
                assert response.status == 401
            async with session.post(
                f"{gateway_server.url}/snap/admin/partners",
                json={"partner_id": "EVIL", "client_key": "k", "public_key": "x"},
                headers={"Authorization": f"Bearer {credential}"},
            ) as response:
                assert response.status == 401
        async with session.get(
            f"{gateway_server.url}/snap/admin/partners", headers={"Authorization": f"Bearer {gateway_server.admin_token}"}
        ) as response:
            listing = await response.text()
    assert "ALPHABANK" in listing
    assert alpha.credentials.client_secret not in listing
    # A SNAP access token is no employer API key.
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{gateway_server.url}/api/v1/bills/{bill.payment_code}", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 401


OWNER_PARAMETERS = ("npp", "payment_code", "kpj", "partner_id", "endpoint_id", "delivery_id", "id")


async def test_every_owner_scoped_route_refuses_another_party(gateway_server, two_banks, bills):
    """Every route whose path names an employer's, a bill's, a worker's or a
    partner's data, called with another party's credentials (employer B's key,
    bank Beta's token) or none: never 2xx, nothing of A's in the answer,
    nothing written. New routes are probed automatically."""
    alpha, beta = two_banks
    victim = await bills.create(workers=1)
    attacker = await bills.create(workers=1)
    victim_name = await gateway_server.pool.fetchval("select name from employers where npp = $1", victim.npp)
    values = {
        "npp": victim.npp,
        "payment_code": victim.payment_code,
        "kpj": victim.kpjs[0],
        "partner_id": alpha.credentials.partner_id,
        "endpoint_id": "1",
        "delivery_id": "1",
        "id": "1",
    }
    credentials = {"employer B": attacker.api_key, "bank Beta": await beta.token(), "nobody": None}
    routes = []
    for route in gateway_server.gateway.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        pattern = info.get("formatter")
        if route.method in ("HEAD", "*") or not pattern:
            continue
        names = re.findall(r"{(\w+)}", pattern)
        if names and all(n in OWNER_PARAMETERS for n in names):
            routes.append((route.method, pattern.format(**{n: values[n] for n in names})))
    assert len(routes) >= 5, routes
    before = await fingerprint(gateway_server.pool)
    leaks = []
    async with aiohttp.ClientSession() as session:
        for method, path in routes:
            for who, secret in credentials.items():
                headers = {"Authorization": f"Bearer {secret}"} if secret else {}
                async with session.request(method, gateway_server.url + path, headers=headers, json={}) as response:
                    text = await response.text()
                if response.status < 300 or victim_name in text or victim.api_key in text:
                    leaks.append((who, method, path, response.status, text[:200]))
    assert leaks == []
    assert await fingerprint(gateway_server.pool) == before


# ------------------------------------------------------------- floods ----


async def test_one_partners_flood_is_refused_429xx00_and_does_not_slow_another(gateway_server, bills):
    flooder = SnapClient(gateway_server.url, await register_partner(gateway_server.url, "FLOODBANK", admin_token=gateway_server.admin_token, requests_per_second_max=2))
    calm = SnapClient(gateway_server.url, await register_partner(gateway_server.url, "CALMBANK", admin_token=gateway_server.admin_token, requests_per_second_max=2))
    bill = await bills.create()
    try:
        await flooder.token()
        await calm.token()
        codes = [(await flooder.inquiry(bill.payment_code)).code for _ in range(6)]
        assert "4292400" in codes
        refused = next(c for c in codes if c == "4292400")
        assert refused[3:5] == "24"
        # The other partner's bucket is its own.
        assert (await calm.inquiry(bill.payment_code)).code == "2002400"
    finally:
        await flooder.close()
        await calm.close()


async def test_an_oversized_snap_body_is_refused_in_snap_terms_and_writes_nothing(gateway_server, two_banks, bills):
    alpha, _ = two_banks
    bill = await bills.create()
    body = alpha.payment_body(bill.payment_code, bill.total_rupiah, "big-0001")
    body["additionalInfo"] = {"padding": "x" * 70_000}  # over the 65,536-byte SNAP limit
    body_text = dumps(body)
    headers = alpha.signed(PAYMENT_PATH, body_text, await alpha.token())
    response = await alpha.send(PAYMENT_PATH, body_text, headers)
    assert response.http_status == 400 and response.code == "4002501"
    assert response.rule == "body-size"
    assert await posted(gateway_server.pool) == 0
    # The link is fine afterwards.
    assert (await alpha.pay(bill.payment_code, bill.total_rupiah, "small-0001")).code == "2002500"


# ------------------------------------------------------------ replays ----


async def test_a_captured_request_replayed_outside_the_timestamp_window_is_refused(gateway_server, two_banks, bills):
    alpha, _ = two_banks
    bill = await bills.create()
    tolerance_s = await gateway_server.pool.fetchval(
        "select timestamp_tolerance_s from snap_partners where partner_id = $1", alpha.credentials.partner_id
    )
    token = await alpha.token()
    body_text = dumps(alpha.payment_body(bill.payment_code, bill.total_rupiah, "replay-0001"))
    # What an eavesdropper holds after the window: a request signed that long ago.
    old = protocol.format_timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=tolerance_s + 60))
    stale = alpha.signed(PAYMENT_PATH, body_text, token, timestamp=old)
    response = await alpha.send(PAYMENT_PATH, body_text, stale)
    assert response.code == "4012500" and response.rule == "timestamp-window"
    assert await posted(gateway_server.pool) == 0
    # Within the window, a verbatim replay is the same request: answered, never posted twice.
    fresh = alpha.signed(PAYMENT_PATH, body_text, token)
    first = await alpha.send(PAYMENT_PATH, body_text, fresh)
    again = await alpha.send(PAYMENT_PATH, body_text, fresh)
    assert first.code == again.code == "2002500"
    assert again.body["additionalInfo"]["outcome"] == "replayed"
    # The same signed headers on another body fail the signature.
    other = dumps(alpha.payment_body(bill.payment_code, bill.total_rupiah + 1, "replay-0001"))
    assert (await alpha.send(PAYMENT_PATH, other, fresh)).code == "4012500"
    assert await posted(gateway_server.pool) == 1


# ------------------------------------------------------------- logs -----


async def test_no_secret_reaches_the_logs_of_a_full_run(gateway_process, pool, clock):
    """A gateway process at log level debug, JSON logs: register an employer
    (API key), a partner (client secret), take a SNAP token, inquire, pay,
    ask status, send a bad signature (sandbox explains it). Then search every
    log line for every secret."""
    from tests.conftest import BillFactory

    gateway = gateway_process(extra_env={"KANAL_LOG_LEVEL": "debug", "KANAL_LOG_FORMAT": "json"})
    await gateway.start_ready()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            gateway.url + "/api/v1/employers",
            json={"npp": "LG000001", "name": "PT Log", "regency_code": "6171", "size_class": "small", "jkk_risk_class": 1},
        ) as response:
            api_key = (await response.json())["api_key"]
        async with session.get(gateway.url + "/api/v1/employers/LG000001/bills", headers={"Authorization": f"Bearer {api_key}"}) as response:
            assert response.status == 200
    credentials = await register_partner(gateway.url, "LOGBANK")
    bill = await BillFactory(pool, clock).create()
    async with SnapClient(gateway.url, credentials) as bank:
        token = await bank.token()
        inquiry = await bank.inquiry(bill.payment_code)
        payment = await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)
        status = await bank.status(bill.payment_code, inquiry.request_id)
        body_text = dumps({**bank.virtual_account(bill.payment_code), "inquiryRequestId": uuid.uuid4().hex})
        headers = bank.signed(INQUIRY_PATH, body_text, token)
        signature = headers["X-SIGNATURE"]
        headers["X-SIGNATURE"] = signature[:-4] + "AAA="
        refused = await bank.send(INQUIRY_PATH, body_text, headers)
    assert (payment.code, status.code, refused.code) == ("2002500", "2002600", "4012400")
    gateway.stop()
    logs = gateway.log_text()
    assert '"event": "snap.exchange"' in logs  # the run was logged, JSON, one line per exchange
    secrets = {
        "employer API key": api_key,
        "partner client secret": credentials.client_secret,
        "SNAP access token": token,
        "admin token": ADMIN_TOKEN,
        "request signature": signature,
        "private key": credentials.private_key_pem.splitlines()[1],
    }
    found = [name for name, value in secrets.items() if value in logs]
    assert found == [], f"secrets in the logs: {found}"
    assert len(logs.splitlines()) > 10


# ----------------------------------------------------- constant time ----


def _snap_sources() -> dict[str, ast.Module]:
    folder = REPO / "bank_adapters" / "snap"
    return {path.name: ast.parse(path.read_text(encoding="utf-8")) for path in folder.glob("*.py")}


SECRET_NAME = re.compile(r"signature|secret|token|digest|mac|expected|received", re.IGNORECASE)


def _names(node: ast.AST) -> set[str]:
    out = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            out.add(child.id)
        elif isinstance(child, ast.Attribute):
            out.add(child.attr)
        elif isinstance(child, ast.Call) and isinstance(child.func, ast.Name):
            out.add(child.func.id)
    return out


def test_signatures_and_tokens_are_compared_in_constant_time():
    sources = _snap_sources()
    functions = {
        node.name: node for tree in sources.values() for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
    }
    calls = lambda fn: {ast.unparse(c.func) for c in ast.walk(functions[fn]) if isinstance(c, ast.Call)}
    assert "hmac.compare_digest" in calls("verify_transaction")
    assert "public_key.verify" in calls("verify_token_request")  # cryptography's RSA verify
    assert "hmac.compare_digest" in calls("_admin_allowed")
    # No == or != anywhere in the SNAP adapter between values named like secrets.
    offenders = []
    for filename, tree in sources.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) for o in operands):
                    continue  # comparing to a literal (a code, None) leaks nothing secret
                sides = [_names(o) for o in operands]
                if all(any(SECRET_NAME.search(n) for n in side) for side in sides):
                    offenders.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    # Tokens are looked up by value in PostgreSQL (an index), never compared in Python.
    assert offenders == []


# ------------------------------------------------------- SQL injection --

SQL_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_from_query", "prepare", "cursor"}
SCANNED = ("gateway", "bank_adapters", "bench", "scripts", "tests", "schemas")
# (path, a fragment of the line): identifiers that cannot be parameters, each quoted or fixed.
ALLOWED_DYNAMIC_SQL = {
    # CREATE/DROP/ALTER DATABASE with a double-quoted name are allowed by rule
    # (see _quoted_database_ddl); this one builds its statement in a variable,
    # quoting the identifier with quotes doubled.
    ("gateway/store/database.py", "await conn.execute(sql)"),
    # Table names from the module's own TABLES list, or pg_tables, in tests.
    ("tests/ops/test_reconcile.py", "select count(*) from {t}"),
    ("tests/e2e/test_employer_api.py", "from \"{table}\" t"),
    # _offending wraps each check's own SQL constant; the limit goes through int().
    ("gateway/ops/checks.py", "from ({sql}) q"),
    # clause is one of two fixed fragments chosen by the verdict filter.
    ("gateway/callbacks/conformance.py", "{clause}"),
}


_CONSTANT_NAME = re.compile(r"_?[A-Z][A-Z0-9_]*")


def _safe(node: ast.AST, constants: set[str]) -> bool:
    """Text fixed by the program: literals, module constants (UPPER_CASE or
    assigned from literals at module level), int(...), and f-strings or
    concatenations of those. Such text carries no caller's input."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants or bool(_CONSTANT_NAME.fullmatch(node.id))
    if isinstance(node, ast.Attribute):  # another module's constant: store.ENDPOINT_COLUMNS
        return bool(_CONSTANT_NAME.fullmatch(node.attr))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "int":
        return True
    if isinstance(node, ast.JoinedStr):
        return all(_safe(v.value if isinstance(v, ast.FormattedValue) else v, constants) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _safe(node.left, constants) and _safe(node.right, constants)
    return False


def _dynamic(node: ast.AST, dynamic_names: set[str], constants: set[str]) -> bool:
    """A string built at run time from something other than the program's own
    constants: an f-string, +, % or .format()/.join() with a variable in it."""
    if isinstance(node, ast.Name):
        return node.id in dynamic_names
    if isinstance(node, (ast.JoinedStr, ast.BinOp)):
        return not _safe(node, constants)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return True
    return False


def _quoted_database_ddl(node: ast.AST) -> bool:
    """`f'create database "{name}"'` and the like (create, drop, alter, comment
    on): a database name is an
    identifier, which PostgreSQL cannot take as a parameter. Allowed when every
    value sits inside double quotes (the names are the program's own)."""
    if not isinstance(node, ast.JoinedStr):
        return False
    parts = node.values
    head = parts[0].value if parts and isinstance(parts[0], ast.Constant) else ""
    if not re.match(r"\s*(create|drop|alter|comment on) database\b", str(head), re.IGNORECASE):
        return False
    for index, part in enumerate(parts):
        if isinstance(part, ast.FormattedValue):
            before = parts[index - 1] if index else None
            after = parts[index + 1] if index + 1 < len(parts) else None
            if not (isinstance(before, ast.Constant) and str(before.value).endswith('"')):
                return False
            if not (isinstance(after, ast.Constant) and str(after.value).startswith('"')):
                return False
    return True


def _module_constants(tree: ast.Module) -> set[str]:
    constants: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and _safe(node.value, constants):
            constants |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return constants


def sql_built_from_text() -> list[str]:
    found = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            tree = ast.parse(text)
            constants = _module_constants(tree)
            for function in ast.walk(tree):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                dynamic_names: set[str] = set()
                for node in ast.walk(function):
                    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                        if _dynamic(node.value, set(), constants) or isinstance(node, ast.AugAssign):
                            dynamic_names |= {t.id for t in targets if isinstance(t, ast.Name)}
                for node in ast.walk(function):
                    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                        continue
                    if node.func.attr not in SQL_METHODS or not node.args:
                        continue
                    if _dynamic(node.args[0], dynamic_names, constants) and not _quoted_database_ddl(node.args[0]):
                        statement = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                        if not any(relative == p and fragment in statement for p, fragment in ALLOWED_DYNAMIC_SQL):
                            found.append(f"{relative}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(set(found))


def test_sql_is_only_ever_built_with_parameters():
    assert sql_built_from_text() == []


def test_the_sql_check_catches_what_it_is_for(tmp_path: Path, monkeypatch):
    bad = REPO / "scripts" / "_sql_check_probe.py"
    bad.write_text(
        "async def f(conn, npp):\n"
        "    await conn.fetch(f\"select * from bills where npp = '{npp}'\")\n"
        "    query = 'select * from bills where npp = ' + npp\n"
        "    await conn.execute(query)\n"
        "    await conn.fetchval('select %s' % npp)\n"
        "    await conn.fetchrow('select * from bills where npp = $1', npp)\n"
        "    await conn.execute(f'create database {npp}')\n"
        "    await conn.execute(f'create database \"{npp}\"')\n",
        encoding="utf-8",
    )
    try:
        found = [f for f in sql_built_from_text() if "_sql_check_probe" in f]
    finally:
        bad.unlink()
    assert [f.split(":")[1] for f in found] == ["2", "4", "5", "7"]
