"""Engine side of the guest agent protocol."""

from .client import (
    AgentClient,
    AgentError,
    ExecHandle,
    ExecResult,
    ExitStatus,
    HelloInfo,
    SessionInfo,
)

__all__ = [
    "AgentClient",
    "AgentError",
    "ExecHandle",
    "ExecResult",
    "ExitStatus",
    "HelloInfo",
    "SessionInfo",
]
