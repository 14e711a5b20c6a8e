"""The API server: the Engine servicer behind a guard every request passes first.

Left alone, grpc answers UNKNOWN when a request's bytes do not parse (the deserializer raises
before any servicer code runs) and when an exception escapes a servicer. The guard makes both
answers of ours, with the usual JSON details {code, message, remedy}: bytes that are not the
request, or a request no RPC accepts (validate.check), end as INVALID_ARGUMENT; on a stream,
each message is checked as the servicer reads it. An exception that escapes a servicer is an
engine bug and ends as INTERNAL.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import Message

from engine.api import grove_pb2_grpc as pb_grpc
from engine.api import status, validate
from engine.api.service import EngineService
from engine.errors import GroveError, invalid

if TYPE_CHECKING:
    from engine.daemon import Engine

MAX_MESSAGE_BYTES = 64 << 20
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
_DECODE_PREFIX = "Error parsing message"

Context = Any  # grpc.aio.ServicerContext


def make_server(engine: Engine) -> grpc.aio.Server:
    """The engine's gRPC server, not yet bound to an address or started."""
    status.redact_errors_with(engine.redactor)
    server = grpc.aio.server(interceptors=[RequestGuard()], options=OPTIONS)
    pb_grpc.add_EngineServicer_to_server(EngineService(engine), server)  # type: ignore[no-untyped-call]
    return server


class RequestGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method handler: see the module docstring."""

    def __init__(self) -> None:
        # path -> (the handler, guarded): a method's handler is the same object on every call.
        self._guarded: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: grpc answers UNIMPLEMENTED
        path = str(handler_call_details.method)
        known = self._guarded.get(path)
        if known is None or known[0] is not handler:
            known = (handler, guard(handler, path))
            self._guarded[path] = known
        return known[1]


@dataclass(frozen=True)
class _Rejected:
    """What the guarded deserializer returns for bytes that are not the request."""

    error: GroveError


def guard(handler: Any, path: str) -> Any:
    """handler (a grpc.RpcMethodHandler for path, e.g. /grove.v1.Engine/Status), guarded."""
    method = path.rpartition("/")[2] or path
    deserialize = _tolerant(handler.request_deserializer, method, _request_type(path))
    serialize = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _stream_stream(method, handler.stream_stream), deserialize, serialize
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _stream_unary(method, handler.stream_unary), deserialize, serialize
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _unary_stream(method, handler.unary_stream), deserialize, serialize
        )
    return grpc.unary_unary_rpc_method_handler(
        _unary_unary(method, handler.unary_unary), deserialize, serialize
    )


def _request_type(path: str) -> str:
    try:
        found = descriptor_pool.Default().FindMethodByName(path.strip("/").replace("/", "."))
    except KeyError:
        return ""
    return str(found.input_type.full_name)


def malformed(method: str, request_type: str, exc: Exception) -> GroveError:
    detail = str(exc).strip()
    if detail.startswith(_DECODE_PREFIX):
        # "Error parsing message with type 'grove.v1.X': Wire format was corrupt"
        detail = detail.partition(": ")[2]
    what = f"not a valid {request_type}" if request_type else "does not parse"
    cause = f"{what} ({detail})" if detail else what
    return invalid(
        f"malformed {method} request: {cause}",
        f"encode it as {request_type or 'the request message'} from grove.proto; "
        "a client built for another engine version may need an upgrade",
    )


def _tolerant(
    deserializer: Callable[[bytes], Any] | None, method: str, request_type: str
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:
            return _Rejected(malformed(method, request_type, exc))

    return deserialize


def _admit(method: str, request: Any) -> Any:
    if isinstance(request, _Rejected):
        raise request.error
    if isinstance(request, Message):
        validate.check(method, request)
    return request


class _Requests:
    """A request stream as the servicer reads it: every message admitted first. After a
    rejected message the stream stays broken, and the guard ends the RPC with that error
    even if the servicer swallowed it."""

    def __init__(self, method: str, requests: Any) -> None:
        self._method = method
        self._requests = requests
        self._iterator: Any = None
        self.rejected: GroveError | None = None

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        if self.rejected is not None:
            raise self.rejected
        if self._iterator is None:
            self._iterator = aiter(self._requests)
        request = await anext(self._iterator)
        try:
            return _admit(self._method, request)
        except GroveError as exc:
            self.rejected = exc
            raise


async def _responses(result: Any) -> AsyncGenerator[Any, None]:
    """What a streaming servicer method returned, as one async stream of responses."""
    if inspect.isasyncgen(result):
        async with contextlib.aclosing(result) as responses:
            async for response in responses:
                yield response
    elif inspect.isawaitable(result):
        await result  # it wrote its responses through the context
    elif result is not None:
        for response in result:
            yield response


async def _value(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def _unary_unary(method: str, inner: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def behavior(request: Any, context: Context) -> Any:
        try:
            return await _value(inner(_admit(method, request), context))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await status.abort(context, exc)

    return behavior


def _stream_unary(method: str, inner: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def behavior(request_iterator: Any, context: Context) -> Any:
        requests = _Requests(method, request_iterator)
        try:
            response = await _value(inner(requests, context))
            if requests.rejected is not None:
                raise requests.rejected
            return response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await status.abort(context, exc)

    return behavior


def _unary_stream(method: str, inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async with contextlib.aclosing(
                _responses(inner(_admit(method, request), context))
            ) as responses:
                async for response in responses:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await status.abort(context, exc)

    return behavior


def _stream_stream(method: str, inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def behavior(request_iterator: Any, context: Context) -> AsyncIterator[Any]:
        requests = _Requests(method, request_iterator)
        try:
            async with contextlib.aclosing(_responses(inner(requests, context))) as responses:
                async for response in responses:
                    yield response
            if requests.rejected is not None:
                raise requests.rejected
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await status.abort(context, exc)

    return behavior
