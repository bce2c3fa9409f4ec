"""The pool skips asyncpg's per-release session reset (gateway/store/database.py,
`_keep_session`), which is only safe while no code leaves session state on a
pooled connection. This test reads the code for the ways state could leak, so
that a change that adds one fails here rather than in production."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for folder in ("gateway", "bank_adapters") for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sql")]

RULES = {
    "session advisory lock (use pg_advisory_xact_lock)": re.compile(r"pg_(try_)?advisory_lock(_shared)?\s*\(", re.I),
    "session-level set_config (pass true: transaction-local)": re.compile(r"set_config\s*\([^)]*,\s*false\s*\)", re.I),
    "SET without LOCAL sent through execute()": re.compile(r"""execute\(\s*[rbf]*(\"\"\"|\"|')\s*set\s+(?!local\b)""", re.I),
    "temporary table that outlives its transaction": re.compile(r"create\s+temp(orary)?\s+table(?![^;]*on\s+commit\s+drop)", re.I),
}


def test_sources_are_found():
    assert len(SOURCES) > 50


def test_no_code_leaves_session_state_on_a_pooled_connection():
    found = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for what, pattern in RULES.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
        if "add_listener(" in text and path.name != "stream.py":
            found.append(f"{path.relative_to(ROOT)}: LISTEN outside gateway/http/stream.py's own connection")
    assert found == []


def test_the_rules_catch_what_they_name():
    leaks = {
        "session advisory lock (use pg_advisory_xact_lock)": "select pg_advisory_lock(42)",
        "session-level set_config (pass true: transaction-local)": "select set_config('x.y', '1', false)",
        "SET without LOCAL sent through execute()": 'await conn.execute("set statement_timeout = 0")',
        "temporary table that outlives its transaction": "create temp table t as select 1;",
    }
    for what, sample in leaks.items():
        assert RULES[what].search(sample), what
    assert not RULES["SET without LOCAL sent through execute()"].search('await conn.execute("set local lock_timeout = 1")')
    assert not RULES["temporary table that outlives its transaction"].search("create temp table t on commit drop as select 1;")
