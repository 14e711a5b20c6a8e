"""Errors to gRPC statuses: a status code and the JSON details {code, message, remedy}.

Every error an RPC ends with goes through abort(): a GroveError keeps its code, anything else
is an engine bug and answers INTERNAL. Message and remedy are made one line and bounded, since
they may echo what a client sent and travel in trailing metadata (a few KiB at most).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc

from engine.errors import GroveError
from engine.secrets.redact import Redactor

log = logging.getLogger(__name__)
#: The engine's redactor: no secret value leaves in an error (set by make_server).
_redactor = Redactor()


def redact_errors_with(redactor: Redactor) -> None:
    global _redactor
    _redactor = redactor


_STATUS = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_phase": grpc.StatusCode.FAILED_PRECONDITION,
    "already_terminated": grpc.StatusCode.FAILED_PRECONDITION,
    "sandbox_not_running": grpc.StatusCode.FAILED_PRECONDITION,
    "name_taken": grpc.StatusCode.ALREADY_EXISTS,
    "service_exists": grpc.StatusCode.ALREADY_EXISTS,
    "internal": grpc.StatusCode.INTERNAL,
}

MAX_MESSAGE = 500
MAX_REMEDY = 300
# Line breaks and other characters a terminal would act on: shown escaped, never raw.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def status_code(code: str) -> grpc.StatusCode:
    if code.endswith("_not_found"):
        return grpc.StatusCode.NOT_FOUND
    # Any other code is a failure the engine understood (a phase, a policy, a missing tool):
    # the request cannot be served as things are, which is not an engine bug.
    return _STATUS.get(code, grpc.StatusCode.FAILED_PRECONDITION)


def one_line(text: str, limit: int) -> str:
    """text on one line, control characters escaped, at most limit characters."""
    flat = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text.strip())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat


def as_grove_error(exc: BaseException) -> GroveError:
    clean = _redactor.text
    if isinstance(exc, GroveError):
        return GroveError(
            exc.code,
            one_line(clean(exc.message), MAX_MESSAGE),
            one_line(clean(exc.remedy), MAX_REMEDY),
        )
    log.error("internal error", exc_info=exc)
    return GroveError(
        "internal",
        one_line(clean(f"engine error: {type(exc).__name__}: {exc}"), MAX_MESSAGE),
        "see the engine log",
    )


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """End the RPC with exc as its status; raises (grpc.aio.AbortError) like context.abort."""
    error = as_grove_error(exc)
    await context.abort(status_code(error.code), error.to_json())
