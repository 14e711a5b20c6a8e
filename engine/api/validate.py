"""What no request field may hold, whatever the RPC: checked before any servicer sees it.

A NUL cannot be in a name, path, argument or variable; a number must be finite; a name or id
is short and free of control characters (it ends up in messages, logs and file names). Values
are never echoed (a field may hold a secret), only where they are.
"""

from __future__ import annotations

import math
import re

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from engine.errors import invalid
from engine.net.policy import MAX_ALLOW_RULES

#: Fields that name or identify something: sandboxes, environments, snapshots, shells,
#: services, signals, policies, probe kinds, terminal types.
IDENTIFIERS = frozenset(
    {
        "sandbox",
        "ref",
        "name",
        "shell_id",
        "environment",
        "from_snapshot",
        "snapshot",
        "against_snapshot",
        "name_prefix",
        "signal",
        "restart",
        "term",
        "kind",
    }
)
MAX_IDENTIFIER = 128
#: Guest paths: at most PATH_MAX.
PATHS = frozenset({"cwd", "paths"})
MAX_PATH = 4096
#: Network policies (engine.net.policy), parsed by the servicer: on one line, and no longer
#: than the most hosts allow= takes, each a full-length name with a port (and a ', ').
POLICIES = frozenset({"network", "policy"})
MAX_POLICY = len("allow=") + MAX_ALLOW_RULES * (253 + len(":65535, "))

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def check(method: str, message: Message) -> None:
    """Raise an invalid_argument GroveError naming the first bad field of message."""
    problem = _message(message, "")
    if problem is not None:
        text, remedy = problem
        raise invalid(f"invalid {method} request: {text}", remedy)


Problem = tuple[str, str]


def _message(message: Message, prefix: str) -> Problem | None:
    for field, value in message.ListFields():
        label = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                problem = _value(key_field, key, f"{label} key") or _value(
                    value_field, item, f"{label} value"
                )
                if problem is not None:
                    return problem
        elif field.is_repeated:
            for index, item in enumerate(value):
                problem = _value(field, item, f"{label}[{index}]")
                if problem is not None:
                    return problem
        else:
            problem = _value(field, value, label)
            if problem is not None:
                return problem
    return None


def _value(field: FieldDescriptor, value: object, label: str) -> Problem | None:
    if isinstance(value, Message):
        return _message(value, f"{label}.")
    if isinstance(value, str):
        return _string(field.name, value, label)
    if field.type in _FLOATS and isinstance(value, float) and not math.isfinite(value):
        return f"{label} is {value}, not a finite number", "pass a finite number (0: the default)"
    return None


def _string(name: str, value: str, label: str) -> Problem | None:
    if "\0" in value:
        return (
            f"{label} contains a NUL character",
            "remove it: no name, path, argument or variable can hold a NUL",
        )
    if name in IDENTIFIERS:
        if len(value) > MAX_IDENTIFIER:
            return (
                f"{label} is {len(value)} characters long",
                f"pass a name or id of at most {MAX_IDENTIFIER} characters",
            )
        if _CONTROL.search(value):
            return (
                f"{label} contains a line break or control character",
                "pass the name or id exactly as a listing shows it, e.g. 'grove ps'",
            )
    if name in POLICIES:
        if len(value) > MAX_POLICY:
            return (
                f"{label} is {len(value)} characters long",
                f"allow at most {MAX_ALLOW_RULES} hosts; allow a CIDR instead of many addresses",
            )
        if _CONTROL.search(value):
            return (
                f"{label} contains a line break or control character",
                "pass off, published, egress or allow=HOST[:PORT],... on one line",
            )
    if name in PATHS and len(value) > MAX_PATH:
        return f"{label} is {len(value)} characters long", f"pass a path of at most {MAX_PATH}"
    return None
