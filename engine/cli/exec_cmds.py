"""grove sandbox exec and grove run: stream a guest command's output and carry its exit code."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from engine.api import grove_pb2 as pb
from engine.cli.context import Context
from engine.cli.output import emit_json
from engine.cli.sandbox_cmds import create_request, parse_pairs
from engine.client import grove_error
from engine.errors import GroveError, invalid

# Like `docker run`: 125 means Grove itself failed, so it never hides the command's own code.
EXIT_GROVE_ERROR = 125


@dataclass
class ExecOutcome:
    exit_code: int
    signal: str
    timed_out: bool
    duration_ms: float
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)


def command_argv(ctx: Context) -> list[str]:
    argv = [a for a in (ctx.args.command or [])]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise invalid("no command given", "put the command after '--', e.g. -- uname -a")
    return argv


def _inputs(
    start: pb.ExecStart, outbox: queue.Queue[pb.ExecInput | None]
) -> Iterator[pb.ExecInput]:
    yield pb.ExecInput(start=start)
    while (message := outbox.get()) is not None:
        yield message


def _pump_stdin(outbox: queue.Queue[pb.ExecInput | None]) -> None:
    fd = sys.stdin.fileno()
    while chunk := os.read(fd, 65536):
        outbox.put(pb.ExecInput(stdin=chunk))
    outbox.put(pb.ExecInput(stdin_eof=True))


def _receive(
    responses: Iterator[pb.ExecOutput], inbox: queue.Queue[pb.ExecOutput | grpc.RpcError | None]
) -> None:
    try:
        for message in responses:
            inbox.put(message)
    except grpc.RpcError as exc:
        inbox.put(exc)
    finally:
        inbox.put(None)


def run_exec(ctx: Context, sandbox: str, argv: list[str], capture: bool) -> ExecOutcome:
    a = ctx.args
    if a.timeout is not None and a.timeout <= 0:
        raise invalid(f"invalid --timeout {a.timeout}", "pass a positive number of seconds")
    start = pb.ExecStart(
        sandbox=sandbox,
        argv=argv,
        env=parse_pairs(a.env, "--env"),
        cwd=a.cwd or "",
        timeout_s=a.timeout or 0,
        stdin=bool(a.interactive),
    )
    outbox: queue.Queue[pb.ExecInput | None] = queue.Queue()
    if a.interactive:
        threading.Thread(target=_pump_stdin, args=(outbox,), daemon=True).start()
    responses = ctx.client.stub.Exec(_inputs(start, outbox))
    # The stream is read on a thread: a Ctrl+C that lands inside a gRPC read breaks the call
    # for good, while one that lands in the queue wait here is just a signal to forward.
    inbox: queue.Queue[pb.ExecOutput | grpc.RpcError | None] = queue.Queue()
    threading.Thread(target=_receive, args=(responses, inbox), daemon=True).start()
    outcome: ExecOutcome | None = None
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    stdout = bytearray()
    stderr = bytearray()
    interrupts = 0
    try:
        while True:
            try:
                message = inbox.get()
            except KeyboardInterrupt:
                # First Ctrl+C goes to the guest process group; a second one kills it, a third
                # gives up on it.
                interrupts += 1
                outbox.put(pb.ExecInput(signal="INT" if interrupts == 1 else "KILL"))
                if interrupts > 2:
                    responses.cancel()
                    raise
                continue
            if message is None:
                break
            if isinstance(message, grpc.RpcError):
                raise grove_error(message) from None
            kind = message.WhichOneof("kind")
            if kind == "stdout":
                if capture:
                    stdout += message.stdout
                else:
                    out.write(message.stdout)
                    out.flush()
            elif kind == "stderr":
                if capture:
                    stderr += message.stderr
                else:
                    err.write(message.stderr)
                    err.flush()
            elif kind == "exit":
                ex = message.exit
                outcome = ExecOutcome(ex.exit_code, ex.signal, ex.timed_out, ex.duration_ms)
    finally:
        outbox.put(None)
    if outcome is None:
        raise GroveError("exec_lost", "the command's exit status never arrived", "retry")
    outcome.stdout, outcome.stderr = stdout, stderr
    return outcome


def _exit_code(outcome: ExecOutcome) -> int:
    if outcome.timed_out:
        return 124  # as coreutils timeout(1)
    if outcome.exit_code < 0:
        return 128 + _signal_number(outcome.signal)
    return outcome.exit_code


def _signal_number(name: str) -> int:
    import signal

    with contextlib.suppress(KeyError, ValueError):
        return int(signal.Signals["SIG" + name.removeprefix("SIG")])
    with contextlib.suppress(ValueError):
        return int(name)
    return 9


def report(ctx: Context, outcome: ExecOutcome) -> int:
    if ctx.json:
        emit_json(
            {
                "exit_code": outcome.exit_code,
                "stdout": outcome.stdout.decode("utf-8", errors="replace"),
                "stderr": outcome.stderr.decode("utf-8", errors="replace"),
                "duration_ms": round(outcome.duration_ms, 3),
                "signal": outcome.signal or None,
                "timed_out": outcome.timed_out,
            }
        )
    elif outcome.timed_out:
        print(f"grove: command timed out after {ctx.args.timeout} s", file=sys.stderr)
    return _exit_code(outcome)


def exec_(ctx: Context) -> int:
    argv = command_argv(ctx)
    outcome = run_exec(ctx, ctx.args.id, argv, capture=ctx.json)
    return report(ctx, outcome)


def run(ctx: Context) -> int:
    """Create, exec, terminate: the sandbox never outlives the command."""
    a = ctx.args
    argv = command_argv(ctx)
    parse_pairs(a.env, "--env")  # fail on bad input before booting anything
    sandbox = ctx.client.call("CreateSandbox", create_request(a))
    try:
        outcome = run_exec(ctx, sandbox.id, argv, capture=ctx.json)
    finally:
        with contextlib.suppress(GroveError):
            ctx.client.call("TerminateSandbox", pb.SandboxRef(ref=sandbox.id))
    return report(ctx, outcome)
