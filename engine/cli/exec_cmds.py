"""grove sandbox exec and grove run: stream a guest command's output and carry its exit code."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading

from engine.cli import secret_opts
from engine.cli.context import Context
from engine.cli.output import emit_json
from engine.cli.sandbox_cmds import create_sandbox, parse_pairs
from engine.client import ExecOutput, ExecResult, SyncExecStream
from engine.errors import GroveError, invalid

# Like `docker run`: 125 means Grove itself failed, so it never hides the command's own code.
EXIT_GROVE_ERROR = 125


def command_argv(ctx: Context) -> list[str]:
    argv = [a for a in (ctx.args.command or [])]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise invalid("no command given", "put the command after '--', e.g. -- uname -a")
    return argv


def _pump_stdin(stream: SyncExecStream) -> None:
    fd = sys.stdin.fileno()
    with contextlib.suppress(GroveError):
        while chunk := os.read(fd, 65536):
            stream.write(chunk)
        stream.close_stdin()


def _receive(stream: SyncExecStream, inbox: queue.Queue[ExecOutput | GroveError | None]) -> None:
    try:
        for chunk in stream.output():
            inbox.put(chunk)
    except GroveError as exc:
        inbox.put(exc)
    finally:
        inbox.put(None)


def run_exec(ctx: Context, sandbox: str, argv: list[str], capture: bool) -> ExecResult:
    """Run a command, its output streamed to this terminal (or, with capture, kept)."""
    a = ctx.args
    if a.timeout is not None and a.timeout <= 0:
        raise invalid(f"invalid --timeout {a.timeout}", "pass a positive number of seconds")
    secret_env = secret_opts.call_env(a)  # before ctx.client: bad input starts no engine
    stream = ctx.client.exec_stream(
        sandbox,
        argv,
        env=parse_pairs(a.env, "--env"),
        cwd=a.cwd or "",
        timeout_s=a.timeout or 0,
        stdin=bool(a.interactive),
        secret_env=secret_env,
    )
    if a.interactive:
        threading.Thread(target=_pump_stdin, args=(stream,), daemon=True).start()
    # The stream is read on a thread: a Ctrl+C that lands inside a read would end the call
    # for good, while one that lands in the queue wait here is just a signal to forward.
    inbox: queue.Queue[ExecOutput | GroveError | None] = queue.Queue()
    threading.Thread(target=_receive, args=(stream, inbox), daemon=True).start()
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    stdout = bytearray()
    stderr = bytearray()
    interrupts = 0
    while True:
        try:
            message = inbox.get()
        except KeyboardInterrupt:
            # First Ctrl+C goes to the guest process group; a second one kills it, a third
            # gives up on it.
            interrupts += 1
            if interrupts > 2:
                stream.cancel()
                raise
            with contextlib.suppress(GroveError):
                stream.signal("INT" if interrupts == 1 else "KILL")
            continue
        if message is None:
            break
        if isinstance(message, GroveError):
            raise message
        if capture:
            (stdout if message.stream == "stdout" else stderr).extend(message.data)
        else:
            sink = out if message.stream == "stdout" else err
            sink.write(message.data)
            sink.flush()
    ex = stream.exit
    if ex is None:
        raise GroveError("exec_lost", "the command's exit status never arrived", "retry")
    return ExecResult(ex.exit_code, bytes(stdout), bytes(stderr), ex.duration_ms, ex.signal,
                      ex.timed_out, ex.network_note)  # fmt: skip


def _exit_code(outcome: ExecResult) -> int:
    if outcome.timed_out:
        return 124  # as coreutils timeout(1)
    if outcome.exit_code < 0:
        return 128 + _signal_number(outcome.signal or "")
    return outcome.exit_code


def _signal_number(name: str) -> int:
    import signal

    with contextlib.suppress(KeyError, ValueError):
        return int(signal.Signals["SIG" + name.removeprefix("SIG")])
    with contextlib.suppress(ValueError):
        return int(name)
    return 9


def report(ctx: Context, outcome: ExecResult) -> int:
    if ctx.json:
        emit_json(
            {
                "exit_code": outcome.exit_code,
                "stdout": outcome.stdout.decode("utf-8", errors="replace"),
                "stderr": outcome.stderr.decode("utf-8", errors="replace"),
                "duration_ms": round(outcome.duration_ms, 3),
                "signal": outcome.signal or None,
                "timed_out": outcome.timed_out,
                "network_note": outcome.network_note,
            }
        )
        return _exit_code(outcome)
    if outcome.timed_out:
        print(f"grove: command timed out after {ctx.args.timeout} s", file=sys.stderr)
    if outcome.network_note:
        print(f"grove: {outcome.network_note}", file=sys.stderr)
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
    secret_opts.call_env(a)
    sandbox = create_sandbox(ctx, secret_opts.create_values(a))
    try:
        outcome = run_exec(ctx, sandbox.id, argv, capture=ctx.json)
    finally:
        with contextlib.suppress(GroveError):
            ctx.client.terminate(sandbox.id)
    return report(ctx, outcome)
