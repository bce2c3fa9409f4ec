"""What a user sees when a value is wrong: a short click-style error naming
the option or environment variable, the value and the problem, never a
Python traceback. Each case runs `kanal` as a new process, as a user does."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest


async def kanal(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KANAL_") and k != "DATABASE_URL"}
    environment.update({"KANAL_LOG_FORMAT": "json", **(env or {})})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
    return process.returncode, out.decode(), err.decode()


def assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err and "pydantic_core" not in err, err
    # A short error: the message, and at most click's usage lines above it.
    assert len(err.strip().splitlines()) <= 4, err


async def test_a_port_out_of_range_on_the_command_line_is_a_usage_error():
    code, _, err = await kanal("serve", "--port", "99999")
    assert code == 2
    assert_no_traceback(err)
    assert "Invalid value for '--port': 99999 is not in the range 0<=x<=65535" in err


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("KANAL_HTTP_PORT", "abc", "KANAL_HTTP_PORT='abc': Input should be a valid integer"),
        ("KANAL_POOL_SIZE_MAX", "0", "KANAL_POOL_SIZE_MAX='0': Input should be greater than or equal to 1"),
        ("KANAL_POOL_SIZE_MAX", "1", "KANAL_POOL_SIZE_MIN=2 is larger than KANAL_POOL_SIZE_MAX=1"),
        ("KANAL_CALLBACKS_TIMEOUT_MS", "soon", "KANAL_CALLBACKS_TIMEOUT_MS='soon': Input should be a valid integer"),
        ("KANAL_ADAPTERS", "abc", "KANAL_ADAPTERS: error parsing value"),
    ],
)
async def test_a_wrong_environment_setting_names_the_variable_and_value(variable, value, expected):
    command = ("coverage",)
    if "CALLBACKS" in variable:
        command = ("callbacks", "add", "--partner", "BANKX", "--url", "https://example.com/x", "--event", "payment.posted")
    # No database is reached: the setting is refused before anything connects.
    code, _, err = await kanal(*command, env={variable: value, "DATABASE_URL": "postgresql://kanal@127.0.0.1:1/kanal"})
    assert code == 2, err
    assert_no_traceback(err)
    assert f"Error: {expected}" in err


async def test_a_wrong_adapter_setting_stops_serve_with_its_variable_named(database_url):
    code, _, err = await kanal(
        "serve", "--port", "0", "--iso8583-port", "0",
        env={"DATABASE_URL": database_url, "KANAL_ADAPTERS__ISO8583__IDLE_TIMEOUT_MS": "abc"},
    )
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "Error: iso8583 setting idle_timeout_ms='abc': expected a whole number from 100 to 86400000 "
        "(set by KANAL_ADAPTERS__ISO8583__IDLE_TIMEOUT_MS)"
    )


async def test_a_busy_port_names_the_port_and_how_to_change_it(database_url):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        env = {"DATABASE_URL": database_url}
        code, _, err = await kanal("serve", "--port", "0", "--iso8583-port", str(port), env=env)
        assert code == 1, err
        assert "Traceback" not in err and "Errno" not in err
        assert f"Error: The ISO 8583 port {port} on 127.0.0.1 is already in use" in err
        assert "--iso8583-port or KANAL_ISO8583_PORT" in err

        code, _, err = await kanal("serve", "--port", str(port), "--iso8583-port", "0", env=env)
        assert code == 1, err
        assert "Traceback" not in err
        assert f"Error: The HTTP port {port} on 127.0.0.1 is already in use" in err
        assert "--port or KANAL_HTTP_PORT" in err
    finally:
        taken.close()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--url", "ftp://example.com/x", "Invalid value for '--url' 'ftp://example.com/x': must be an absolute http:// or https:// URL"),
        ("--description", "x" * 201, "Invalid value for '--description' 'xxxx"),
    ],
)
async def test_callbacks_add_refuses_a_wrong_option_as_a_usage_error(option, value, expected):
    args = ["callbacks", "add", "--employer", "AB123456", "--event", "payment.posted"]
    args += ["--url", "https://example.com/x"] if option != "--url" else []
    code, _, err = await kanal(*args, option, value, env={"DATABASE_URL": "postgresql://kanal@127.0.0.1:1/kanal"})
    assert code == 2, err
    assert_no_traceback(err)
    assert f"Error: {expected}" in err
    if option == "--description":
        assert "at most 200 characters" in err


async def test_an_unreachable_database_is_one_line_naming_the_server_not_the_password():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for command in (("check",), ("coverage",), ("conformance", "BANKX"), ("simulate", "--workers", "100")):
        code, _, err = await kanal(*command, env={"DATABASE_URL": f"postgresql://kanal:hunter2@127.0.0.1:{port}/kanal"})
        assert code == 1, (command, err)
        assert_no_traceback(err)
        assert f"Error: cannot connect to PostgreSQL at 127.0.0.1:{port}/" in err, (command, err)
        assert "(from DATABASE_URL)" in err and "hunter2" not in err, err


async def test_a_database_that_does_not_exist_is_named(database_url):
    from gateway.store.database import database_url_with_name

    code, _, err = await kanal("check", env={"DATABASE_URL": database_url_with_name(database_url, "no_such_db")})
    assert code == 1, err
    assert_no_traceback(err)
    assert 'database "no_such_db" does not exist' in err and "Error: cannot connect to PostgreSQL at " in err, err
