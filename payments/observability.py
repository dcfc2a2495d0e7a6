"""Structured JSON logs (structlog) for every service process, with account identifiers masked.

Each line carries the service and process id; a line about a record also its payment id and step (the
processing loops bind them), and a line written inside a span its `trace_id` and `span_id`, so a log
line leads to its trace and a trace to its lines.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import structlog
from opentelemetry import trace

# Keys whose value is an account identifier, whatever its shape (compared lowercased; any key ending
# in "_account" or "_iban" too).
ACCOUNT_KEYS: Final = frozenset({"account", "account_id", "accounts", "payer_account", "payee_account", "iban",
                                 "payer", "payee"})
# An account id may be any 1-64 of [A-Za-z0-9_-] (payments.contracts.validation.ACCOUNT_PATTERN), so in free
# text only the shapes below are recognised: the project's `acc-` / `acc_` prefix (seed files, demo) and an
# IBAN (two letters, two check digits, 11-30 letters or digits). Under an account key any value is masked.
ACCOUNT_IN_TEXT: Final = re.compile(r"(?<![A-Za-z0-9])(?:acc[-_][A-Za-z0-9_-]+|[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30})"
                                    r"(?![A-Za-z0-9])")
MASK: Final = "****"
SHOWN_MAX: Final = 4  # trailing characters kept, and only of an id long enough that they say little


def mask_account(value: str) -> str:
    """`acc-00001234` -> `acc-****1234`: the prefix (`acc-` / `acc_`, else two characters) and the last 4.

    A short id keeps at most half of what follows the prefix, so the mask never gives the whole id away."""
    prefix = value[:4] if value[:4].lower() in ("acc-", "acc_") else value[:2] if len(value) > 4 else ""
    body = value[len(prefix):]
    shown = SHOWN_MAX if len(body) >= 2 * SHOWN_MAX else len(body) // 2
    return f"{prefix}{MASK}{body[len(body) - shown:] if shown else ''}"


def _is_account_key(key: object) -> bool:
    name = str(key).lower()
    return name in ACCOUNT_KEYS or name.endswith(("_account", "_iban"))


def _mask(value: Any, whole: bool) -> Any:
    """`value` with every account id masked: all of each string when `whole` (under an account key), else
    the ids recognised in text. Containers are walked; other objects are masked as their repr, which is what
    the JSON renderer would print for them."""
    if isinstance(value, str):
        return mask_account(value) if whole else ACCOUNT_IN_TEXT.sub(lambda m: mask_account(m.group()), value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _mask(v, whole or _is_account_key(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask(item, whole) for item in value]
    return _mask(repr(value), whole)


def mask_accounts(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: masks account identifiers in every value of the event dict, nested ones too.

    Runs last before the renderer, after the exception is formatted, so a traceback is masked as well."""
    for key, value in event_dict.items():
        event_dict[key] = _mask(value, _is_account_key(key))
    return event_dict


def add_trace_ids(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current span's trace and span id (W3C hex), when a line is written inside one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", f"{context.trace_id:032x}")
        event.setdefault("span_id", f"{context.span_id:016x}")
    return event


def configure_logging(service: str, level_name: str = "INFO") -> None:
    """JSON lines on stderr, each with the service name and process id; `level_name` as in `logging`."""
    level = getattr(logging, level_name.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_accounts,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, pid=os.getpid())
