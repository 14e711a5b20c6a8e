"""What a failed guest file operation means to a user: one code, a cause and a remedy."""

from __future__ import annotations

from engine.agent.client import AgentError
from engine.errors import GroveError


def file_error(exc: AgentError, sandbox: str, path: str) -> GroveError:
    where = f"{path} in sandbox {sandbox}"
    ls = f"check the path with 'grove file ls {sandbox} {_parent(path)}'"
    table = {
        "not_found": ("file_not_found", f"no such file or directory: {where}", ls),
        "not_a_file": (
            "not_a_file",
            f"{where} is not a regular file",
            f"list it with 'grove file ls {sandbox} {path}', or fetch a tree with 'grove pull'",
        ),
        "not_a_directory": (
            "not_a_directory",
            f"{where} is not a directory",
            "pass a directory (or a path that does not exist yet) as the destination",
        ),
        "exists": ("file_exists", f"{where} already exists", "choose another destination"),
        "no_space": (
            "guest_disk_full",
            f"the sandbox's disk is full writing {where}; nothing was changed",
            f"free space (grove sandbox exec {sandbox} -- df -h) or push less",
        ),
        "permission_denied": ("permission_denied", f"permission denied: {where}", ls),
        "read_only": ("read_only", f"{where} is on a read-only filesystem", ls),
        "checksum_mismatch": (
            "transfer_corrupt",
            f"sha256 mismatch for {where}; nothing was changed",
            "retry the transfer",
        ),
        "unsafe_path": (
            "unsafe_path",
            f"refused an unsafe member for {where}: {exc.message}",
            "push a tree without absolute or '..' names",
        ),
        "unsupported_member": (
            "unsupported_member",
            f"{exc.message} (pushing to {where})",
            "push regular files, directories and symlinks only",
        ),
        "too_many_entries": ("too_many_entries", exc.message, "pull a smaller subtree"),
        "disconnected": (
            "agent_unreachable",
            f"the connection to sandbox {sandbox} dropped during the transfer of {path}",
            "check the sandbox with 'grove sandbox ls' and retry",
        ),
    }
    code, message, remedy = table.get(
        exc.code,
        ("file_failed", f"{path} in sandbox {sandbox}: {exc.message}", "check 'grove logs ID'"),
    )
    return GroveError(code, message, remedy)


def _parent(path: str) -> str:
    parent = path.rsplit("/", 1)[0]
    return parent or "/"
