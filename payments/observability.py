"""Structured JSON logs (structlog) for every service process."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(service: str, level_name: str = "INFO") -> None:
    """JSON lines on stderr, each with the service name and process id; `level_name` as in `logging`."""
    level = getattr(logging, level_name.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, pid=os.getpid())
