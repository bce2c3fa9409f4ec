"""Process-wide hooks that adapters and services report to, and that metrics,
the conformance log or anything else can listen on. Adapters receive
`observe_response` through `AdapterContext.extras["observe_response"]`, so
they stay free of gateway imports. Listeners must be cheap and never raise."""

from __future__ import annotations

from collections.abc import Callable

ResponseListener = Callable[[str, str], None]  # (adapter, response code)

_response_listeners: list[ResponseListener] = []


def add_response_listener(listener: ResponseListener) -> None:
    if listener not in _response_listeners:
        _response_listeners.append(listener)


def remove_response_listener(listener: ResponseListener) -> None:
    if listener in _response_listeners:
        _response_listeners.remove(listener)


def observe_response(adapter: str, code: str) -> None:
    """An adapter answered a bank with `code` (SNAP responseCode, ISO 8583 DE39)."""
    for listener in list(_response_listeners):
        listener(adapter, code)
