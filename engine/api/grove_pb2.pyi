from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EngineStatus(_message.Message):
    __slots__ = ("pid", "socket", "accelerator", "accelerator_reason", "home", "version", "started_at", "sandboxes_running")
    PID_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_REASON_FIELD_NUMBER: _ClassVar[int]
    HOME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SANDBOXES_RUNNING_FIELD_NUMBER: _ClassVar[int]
    pid: int
    socket: str
    accelerator: str
    accelerator_reason: str
    home: str
    version: str
    started_at: float
    sandboxes_running: int
    def __init__(self, pid: _Optional[int] = ..., socket: _Optional[str] = ..., accelerator: _Optional[str] = ..., accelerator_reason: _Optional[str] = ..., home: _Optional[str] = ..., version: _Optional[str] = ..., started_at: _Optional[float] = ..., sandboxes_running: _Optional[int] = ...) -> None: ...

class EnvironmentRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("name", "description", "cached", "recipe_hash", "size_bytes", "created_at", "kernel", "initramfs", "rootfs", "template_ready")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    RECIPE_HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    INITRAMFS_FIELD_NUMBER: _ClassVar[int]
    ROOTFS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_READY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    cached: bool
    recipe_hash: str
    size_bytes: int
    created_at: float
    kernel: str
    initramfs: str
    rootfs: str
    template_ready: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., cached: _Optional[bool] = ..., recipe_hash: _Optional[str] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[float] = ..., kernel: _Optional[str] = ..., initramfs: _Optional[str] = ..., rootfs: _Optional[str] = ..., template_ready: _Optional[bool] = ...) -> None: ...

class EnvironmentList(_message.Message):
    __slots__ = ("environments",)
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[Environment]
    def __init__(self, environments: _Optional[_Iterable[_Union[Environment, _Mapping]]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("name", "force", "warm")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    WARM_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    warm: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., warm: _Optional[bool] = ...) -> None: ...

class PullProgress(_message.Message):
    __slots__ = ("stage", "fraction", "done", "cache_hit", "environment")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    stage: str
    fraction: float
    done: bool
    cache_hit: bool
    environment: Environment
    def __init__(self, stage: _Optional[str] = ..., fraction: _Optional[float] = ..., done: _Optional[bool] = ..., cache_hit: _Optional[bool] = ..., environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...

class PruneReply(_message.Message):
    __slots__ = ("bytes_freed", "removed")
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    bytes_freed: int
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bytes_freed: _Optional[int] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("environment", "name", "vcpus", "mem_mib", "secrets", "from_snapshot")
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    FROM_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    environment: str
    name: str
    vcpus: int
    mem_mib: int
    secrets: _containers.ScalarMap[str, str]
    from_snapshot: str
    def __init__(self, environment: _Optional[str] = ..., name: _Optional[str] = ..., vcpus: _Optional[int] = ..., mem_mib: _Optional[int] = ..., secrets: _Optional[_Mapping[str, str]] = ..., from_snapshot: _Optional[str] = ...) -> None: ...

class Sandbox(_message.Message):
    __slots__ = ("id", "name", "environment", "phase", "vcpus", "mem_mib", "pid", "created_at", "updated_at", "parent_id", "template_id", "error", "has_secrets", "create_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_MIB_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HAS_SECRETS_FIELD_NUMBER: _ClassVar[int]
    CREATE_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    environment: str
    phase: str
    vcpus: int
    mem_mib: int
    pid: int
    created_at: float
    updated_at: float
    parent_id: str
    template_id: str
    error: str
    has_secrets: bool
    create_ms: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., environment: _Optional[str] = ..., phase: _Optional[str] = ..., vcpus: _Optional[int] = ..., mem_mib: _Optional[int] = ..., pid: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., parent_id: _Optional[str] = ..., template_id: _Optional[str] = ..., error: _Optional[str] = ..., has_secrets: _Optional[bool] = ..., create_ms: _Optional[float] = ...) -> None: ...

class SandboxRef(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class SandboxList(_message.Message):
    __slots__ = ("sandboxes",)
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[Sandbox]
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ...) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("round_trip_ms",)
    ROUND_TRIP_MS_FIELD_NUMBER: _ClassVar[int]
    round_trip_ms: float
    def __init__(self, round_trip_ms: _Optional[float] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("sandbox", "argv", "env", "cwd", "timeout_s", "stdin")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    cwd: str
    timeout_s: float
    stdin: bool
    def __init__(self, sandbox: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., timeout_s: _Optional[float] = ..., stdin: _Optional[bool] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("start", "stdin", "stdin_eof", "signal")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDIN_EOF_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    stdin: bytes
    stdin_eof: bool
    signal: str
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., stdin: _Optional[bytes] = ..., stdin_eof: _Optional[bool] = ..., signal: _Optional[str] = ...) -> None: ...

class ExecExit(_message.Message):
    __slots__ = ("exit_code", "signal", "timed_out", "duration_ms")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    signal: str
    timed_out: bool
    duration_ms: float
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[str] = ..., timed_out: _Optional[bool] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ("started_pid", "stdout", "stderr", "exit")
    STARTED_PID_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    started_pid: int
    stdout: bytes
    stderr: bytes
    exit: ExecExit
    def __init__(self, started_pid: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit: _Optional[_Union[ExecExit, _Mapping]] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("sandbox", "follow", "after")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    follow: bool
    after: int
    def __init__(self, sandbox: _Optional[str] = ..., follow: _Optional[bool] = ..., after: _Optional[int] = ...) -> None: ...

class SandboxEvent(_message.Message):
    __slots__ = ("seq", "sandbox_id", "ts", "kind", "detail_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    sandbox_id: str
    ts: float
    kind: str
    detail_json: str
    def __init__(self, seq: _Optional[int] = ..., sandbox_id: _Optional[str] = ..., ts: _Optional[float] = ..., kind: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class ForkRequest(_message.Message):
    __slots__ = ("sandbox", "replicas", "name_prefix", "allow_secrets")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SECRETS_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    replicas: int
    name_prefix: str
    allow_secrets: bool
    def __init__(self, sandbox: _Optional[str] = ..., replicas: _Optional[int] = ..., name_prefix: _Optional[str] = ..., allow_secrets: _Optional[bool] = ...) -> None: ...

class ForkReply(_message.Message):
    __slots__ = ("source", "snapshot", "children", "paused_ms")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    PAUSED_MS_FIELD_NUMBER: _ClassVar[int]
    source: str
    snapshot: str
    children: _containers.RepeatedCompositeFieldContainer[Sandbox]
    paused_ms: float
    def __init__(self, source: _Optional[str] = ..., snapshot: _Optional[str] = ..., children: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ..., paused_ms: _Optional[float] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("sandbox", "name")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    name: str
    def __init__(self, sandbox: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SnapshotRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("name", "id", "source", "created_at", "dependents", "environment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    source: str
    created_at: float
    dependents: _containers.RepeatedScalarFieldContainer[str]
    environment: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., source: _Optional[str] = ..., created_at: _Optional[float] = ..., dependents: _Optional[_Iterable[str]] = ..., environment: _Optional[str] = ...) -> None: ...

class SnapshotList(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("sandbox", "snapshot")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    snapshot: str
    def __init__(self, sandbox: _Optional[str] = ..., snapshot: _Optional[str] = ...) -> None: ...

class LineageNode(_message.Message):
    __slots__ = ("id", "kind", "name", "phase", "created_at", "children")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    name: str
    phase: str
    created_at: float
    children: _containers.RepeatedCompositeFieldContainer[LineageNode]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., phase: _Optional[str] = ..., created_at: _Optional[float] = ..., children: _Optional[_Iterable[_Union[LineageNode, _Mapping]]] = ...) -> None: ...

class LineageReply(_message.Message):
    __slots__ = ("roots",)
    ROOTS_FIELD_NUMBER: _ClassVar[int]
    roots: _containers.RepeatedCompositeFieldContainer[LineageNode]
    def __init__(self, roots: _Optional[_Iterable[_Union[LineageNode, _Mapping]]] = ...) -> None: ...

class DiffRequest(_message.Message):
    __slots__ = ("sandbox", "against_snapshot", "paths")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    AGAINST_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    against_snapshot: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sandbox: _Optional[str] = ..., against_snapshot: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class FileChange(_message.Message):
    __slots__ = ("path", "change", "kind", "old_sha256", "new_sha256", "old_size", "new_size", "patch")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OLD_SHA256_FIELD_NUMBER: _ClassVar[int]
    NEW_SHA256_FIELD_NUMBER: _ClassVar[int]
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    path: str
    change: str
    kind: str
    old_sha256: str
    new_sha256: str
    old_size: int
    new_size: int
    patch: str
    def __init__(self, path: _Optional[str] = ..., change: _Optional[str] = ..., kind: _Optional[str] = ..., old_sha256: _Optional[str] = ..., new_sha256: _Optional[str] = ..., old_size: _Optional[int] = ..., new_size: _Optional[int] = ..., patch: _Optional[str] = ...) -> None: ...

class DiffReply(_message.Message):
    __slots__ = ("sandbox", "against", "changes")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    AGAINST_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    against: str
    changes: _containers.RepeatedCompositeFieldContainer[FileChange]
    def __init__(self, sandbox: _Optional[str] = ..., against: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[FileChange, _Mapping]]] = ...) -> None: ...

class TopRequest(_message.Message):
    __slots__ = ("all", "interval_s")
    ALL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    all: bool
    interval_s: float
    def __init__(self, all: _Optional[bool] = ..., interval_s: _Optional[float] = ...) -> None: ...

class SandboxMetering(_message.Message):
    __slots__ = ("id", "name", "phase", "sampled_at", "unique_mem_bytes", "shared_mem_bytes", "vmm_overhead_bytes", "rss_bytes", "unique_disk_bytes", "shared_disk_bytes", "cpu_percent", "guest_mem_used_bytes", "template_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    VMM_OVERHEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARED_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEM_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    phase: str
    sampled_at: float
    unique_mem_bytes: int
    shared_mem_bytes: int
    vmm_overhead_bytes: int
    rss_bytes: int
    unique_disk_bytes: int
    shared_disk_bytes: int
    cpu_percent: float
    guest_mem_used_bytes: int
    template_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., phase: _Optional[str] = ..., sampled_at: _Optional[float] = ..., unique_mem_bytes: _Optional[int] = ..., shared_mem_bytes: _Optional[int] = ..., vmm_overhead_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., unique_disk_bytes: _Optional[int] = ..., shared_disk_bytes: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., guest_mem_used_bytes: _Optional[int] = ..., template_id: _Optional[str] = ...) -> None: ...

class HostMetering(_message.Message):
    __slots__ = ("sandboxes_running", "naive_mem_bytes", "cow_aware_mem_bytes", "saved_mem_bytes", "naive_guest_mem_bytes", "cow_aware_guest_mem_bytes", "template_mem_bytes", "naive_disk_bytes", "cow_aware_disk_bytes", "saved_disk_bytes", "cpu_percent", "cpu_count", "mem_total_bytes", "mem_available_bytes")
    SANDBOXES_RUNNING_FIELD_NUMBER: _ClassVar[int]
    NAIVE_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    COW_AWARE_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAVED_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAIVE_GUEST_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    COW_AWARE_GUEST_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAIVE_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    COW_AWARE_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAVED_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    sandboxes_running: int
    naive_mem_bytes: int
    cow_aware_mem_bytes: int
    saved_mem_bytes: int
    naive_guest_mem_bytes: int
    cow_aware_guest_mem_bytes: int
    template_mem_bytes: int
    naive_disk_bytes: int
    cow_aware_disk_bytes: int
    saved_disk_bytes: int
    cpu_percent: float
    cpu_count: int
    mem_total_bytes: int
    mem_available_bytes: int
    def __init__(self, sandboxes_running: _Optional[int] = ..., naive_mem_bytes: _Optional[int] = ..., cow_aware_mem_bytes: _Optional[int] = ..., saved_mem_bytes: _Optional[int] = ..., naive_guest_mem_bytes: _Optional[int] = ..., cow_aware_guest_mem_bytes: _Optional[int] = ..., template_mem_bytes: _Optional[int] = ..., naive_disk_bytes: _Optional[int] = ..., cow_aware_disk_bytes: _Optional[int] = ..., saved_disk_bytes: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., cpu_count: _Optional[int] = ..., mem_total_bytes: _Optional[int] = ..., mem_available_bytes: _Optional[int] = ...) -> None: ...

class TopReply(_message.Message):
    __slots__ = ("sampled_at", "sandboxes", "host", "interval_s")
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    sampled_at: float
    sandboxes: _containers.RepeatedCompositeFieldContainer[SandboxMetering]
    host: HostMetering
    interval_s: float
    def __init__(self, sampled_at: _Optional[float] = ..., sandboxes: _Optional[_Iterable[_Union[SandboxMetering, _Mapping]]] = ..., host: _Optional[_Union[HostMetering, _Mapping]] = ..., interval_s: _Optional[float] = ...) -> None: ...

class HistoryReply(_message.Message):
    __slots__ = ("sandbox_id", "interval_s", "samples")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    interval_s: float
    samples: _containers.RepeatedCompositeFieldContainer[SandboxMetering]
    def __init__(self, sandbox_id: _Optional[str] = ..., interval_s: _Optional[float] = ..., samples: _Optional[_Iterable[_Union[SandboxMetering, _Mapping]]] = ...) -> None: ...

class ShellOpenRequest(_message.Message):
    __slots__ = ("sandbox", "shell_id", "cols", "rows", "cwd", "shell", "term", "no_replay")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SHELL_ID_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    NO_REPLAY_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    shell_id: str
    cols: int
    rows: int
    cwd: str
    shell: str
    term: str
    no_replay: bool
    def __init__(self, sandbox: _Optional[str] = ..., shell_id: _Optional[str] = ..., cols: _Optional[int] = ..., rows: _Optional[int] = ..., cwd: _Optional[str] = ..., shell: _Optional[str] = ..., term: _Optional[str] = ..., no_replay: _Optional[bool] = ...) -> None: ...

class ShellResize(_message.Message):
    __slots__ = ("cols", "rows")
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    cols: int
    rows: int
    def __init__(self, cols: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class ShellInput(_message.Message):
    __slots__ = ("open", "stdin", "resize", "signal", "detach")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    open: ShellOpenRequest
    stdin: bytes
    resize: ShellResize
    signal: str
    detach: bool
    def __init__(self, open: _Optional[_Union[ShellOpenRequest, _Mapping]] = ..., stdin: _Optional[bytes] = ..., resize: _Optional[_Union[ShellResize, _Mapping]] = ..., signal: _Optional[str] = ..., detach: _Optional[bool] = ...) -> None: ...

class ShellInfo(_message.Message):
    __slots__ = ("sandbox_id", "shell_id", "state", "cols", "rows", "pid", "argv", "cwd", "created_at", "exit_code", "signal", "viewers", "cursor")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    SHELL_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    VIEWERS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    shell_id: str
    state: str
    cols: int
    rows: int
    pid: int
    argv: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    created_at: float
    exit_code: int
    signal: str
    viewers: int
    cursor: int
    def __init__(self, sandbox_id: _Optional[str] = ..., shell_id: _Optional[str] = ..., state: _Optional[str] = ..., cols: _Optional[int] = ..., rows: _Optional[int] = ..., pid: _Optional[int] = ..., argv: _Optional[_Iterable[str]] = ..., cwd: _Optional[str] = ..., created_at: _Optional[float] = ..., exit_code: _Optional[int] = ..., signal: _Optional[str] = ..., viewers: _Optional[int] = ..., cursor: _Optional[int] = ...) -> None: ...

class ShellExit(_message.Message):
    __slots__ = ("exit_code", "signal", "state")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    signal: str
    state: str
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class ShellOutput(_message.Message):
    __slots__ = ("opened", "output", "state", "exit")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    opened: ShellInfo
    output: bytes
    state: ShellInfo
    exit: ShellExit
    def __init__(self, opened: _Optional[_Union[ShellInfo, _Mapping]] = ..., output: _Optional[bytes] = ..., state: _Optional[_Union[ShellInfo, _Mapping]] = ..., exit: _Optional[_Union[ShellExit, _Mapping]] = ...) -> None: ...

class ShellReadRequest(_message.Message):
    __slots__ = ("sandbox", "shell_id", "cursor", "max_chars", "wait_ms")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SHELL_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MAX_CHARS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    shell_id: str
    cursor: int
    max_chars: int
    wait_ms: int
    def __init__(self, sandbox: _Optional[str] = ..., shell_id: _Optional[str] = ..., cursor: _Optional[int] = ..., max_chars: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class ShellReadReply(_message.Message):
    __slots__ = ("output", "cursor", "next_cursor", "truncated", "state")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    output: str
    cursor: int
    next_cursor: int
    truncated: bool
    state: str
    def __init__(self, output: _Optional[str] = ..., cursor: _Optional[int] = ..., next_cursor: _Optional[int] = ..., truncated: _Optional[bool] = ..., state: _Optional[str] = ...) -> None: ...

class ShellWriteRequest(_message.Message):
    __slots__ = ("sandbox", "shell_id", "input")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SHELL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    shell_id: str
    input: bytes
    def __init__(self, sandbox: _Optional[str] = ..., shell_id: _Optional[str] = ..., input: _Optional[bytes] = ...) -> None: ...

class ShellSignalRequest(_message.Message):
    __slots__ = ("sandbox", "shell_id", "signal")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SHELL_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    shell_id: str
    signal: str
    def __init__(self, sandbox: _Optional[str] = ..., shell_id: _Optional[str] = ..., signal: _Optional[str] = ...) -> None: ...

class ShellRef(_message.Message):
    __slots__ = ("sandbox", "shell_id")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SHELL_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    shell_id: str
    def __init__(self, sandbox: _Optional[str] = ..., shell_id: _Optional[str] = ...) -> None: ...

class ShellListReply(_message.Message):
    __slots__ = ("shells",)
    SHELLS_FIELD_NUMBER: _ClassVar[int]
    shells: _containers.RepeatedCompositeFieldContainer[ShellInfo]
    def __init__(self, shells: _Optional[_Iterable[_Union[ShellInfo, _Mapping]]] = ...) -> None: ...

class ReadyProbe(_message.Message):
    __slots__ = ("kind", "target")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    kind: str
    target: str
    def __init__(self, kind: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class PortPublish(_message.Message):
    __slots__ = ("guest_port", "host_port")
    GUEST_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    guest_port: int
    host_port: int
    def __init__(self, guest_port: _Optional[int] = ..., host_port: _Optional[int] = ...) -> None: ...

class ServiceStartRequest(_message.Message):
    __slots__ = ("sandbox", "name", "argv", "cwd", "env", "ready", "ready_timeout_s", "ready_interval_ms", "restart", "publish")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    READY_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    READY_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    name: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    env: _containers.ScalarMap[str, str]
    ready: ReadyProbe
    ready_timeout_s: float
    ready_interval_ms: int
    restart: str
    publish: _containers.RepeatedCompositeFieldContainer[PortPublish]
    def __init__(self, sandbox: _Optional[str] = ..., name: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., cwd: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., ready: _Optional[_Union[ReadyProbe, _Mapping]] = ..., ready_timeout_s: _Optional[float] = ..., ready_interval_ms: _Optional[int] = ..., restart: _Optional[str] = ..., publish: _Optional[_Iterable[_Union[PortPublish, _Mapping]]] = ...) -> None: ...

class PublishedPort(_message.Message):
    __slots__ = ("host", "host_port", "guest_port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    GUEST_PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    host_port: int
    guest_port: int
    def __init__(self, host: _Optional[str] = ..., host_port: _Optional[int] = ..., guest_port: _Optional[int] = ...) -> None: ...

class ServiceInfo(_message.Message):
    __slots__ = ("sandbox_id", "name", "state", "pid", "ready", "published_ports", "restarts", "restart", "exit_code", "signal", "error", "started_at", "ready_at", "ready_ms", "argv", "cwd", "probe")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_PORTS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    READY_MS_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    name: str
    state: str
    pid: int
    ready: bool
    published_ports: _containers.RepeatedCompositeFieldContainer[PublishedPort]
    restarts: int
    restart: str
    exit_code: int
    signal: str
    error: str
    started_at: float
    ready_at: float
    ready_ms: float
    argv: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    probe: str
    def __init__(self, sandbox_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., pid: _Optional[int] = ..., ready: _Optional[bool] = ..., published_ports: _Optional[_Iterable[_Union[PublishedPort, _Mapping]]] = ..., restarts: _Optional[int] = ..., restart: _Optional[str] = ..., exit_code: _Optional[int] = ..., signal: _Optional[str] = ..., error: _Optional[str] = ..., started_at: _Optional[float] = ..., ready_at: _Optional[float] = ..., ready_ms: _Optional[float] = ..., argv: _Optional[_Iterable[str]] = ..., cwd: _Optional[str] = ..., probe: _Optional[str] = ...) -> None: ...

class ServiceRef(_message.Message):
    __slots__ = ("sandbox", "name")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    name: str
    def __init__(self, sandbox: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ServiceListReply(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceInfo]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceInfo, _Mapping]]] = ...) -> None: ...

class ServiceLogsRequest(_message.Message):
    __slots__ = ("sandbox", "name", "tail", "all", "follow", "since")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    sandbox: str
    name: str
    tail: int
    all: bool
    follow: bool
    since: float
    def __init__(self, sandbox: _Optional[str] = ..., name: _Optional[str] = ..., tail: _Optional[int] = ..., all: _Optional[bool] = ..., follow: _Optional[bool] = ..., since: _Optional[float] = ...) -> None: ...

class ServiceLogLine(_message.Message):
    __slots__ = ("ts", "stream", "text")
    TS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ts: float
    stream: str
    text: str
    def __init__(self, ts: _Optional[float] = ..., stream: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ServiceLogBatch(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[ServiceLogLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[ServiceLogLine, _Mapping]]] = ...) -> None: ...
