"""Themes, the gateways' contract, lineage derivation, formatting, the demo and the palette."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import NO_STALL_S, SIZE, fake_app, key, loaded, wait_for
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot

from engine.api import grove_pb2 as pb
from engine.api.version import API_VERSION
from engine.client import models as sdk
from engine.config import Paths
from engine.errors import GroveError
from tui import format as fmt
from tui.app import GroveApp
from tui.engine.fake import FakeEngine
from tui.engine.gateway import (
    EngineGateway,
    derive_lineage,
    parse_command,
    parse_probe,
    throttled,
)
from tui.engine.grpc_gateway import GrpcGateway, lineage_nodes, meter_sample, sandbox_info
from tui.metering import MeterHistory
from tui.models import (
    EnvironmentInfo,
    MeterSample,
    SandboxInfo,
    SandboxMeter,
    TransferProgress,
    TransferResult,
)
from tui.screens.main import MainScreen
from tui.state.transfer import Transfer
from tui.themes import BUNDLED_DIR, VARIABLE_DEFAULTS, load_theme_file, load_themes
from tui.widgets.bars import transfer_text
from tui.widgets.metering_table import COLUMNS, FLEET_COLUMNS, OPTIONAL, Column, fit_columns
from tui.widgets.service_logs import ServiceLogPane
from tui.widgets.shells import ShellsPane


def test_bundled_themes_load_with_every_variable() -> None:
    themes = load_themes(include_user=False)
    assert not themes.errors
    assert set(themes.themes) >= {"grove-dark", "grove-light", "projector"}
    for theme in themes.themes.values():
        assert set(VARIABLE_DEFAULTS) <= set(theme.variables), theme.name
    assert themes.themes["grove-light"].dark is False
    assert themes.themes["projector"].variables["grove-text-style"] == "bold"


def test_user_theme_dirs_override_and_bad_files_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "grove"
    (home / "themes").mkdir(parents=True)
    monkeypatch.setenv("GROVE_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    source = (BUNDLED_DIR / "grove-dark.yaml").read_text()
    (home / "themes" / "mine.yaml").write_text(source.replace("name: grove-dark", "name: mine"))
    config_dir = tmp_path / "config" / "grove" / "themes"
    config_dir.mkdir(parents=True)
    (config_dir / "broken.yaml").write_text("name: broken\nprimary: [not, a, colour\n")
    themes = load_themes()
    assert "mine" in themes.themes and themes.sources["mine"].parent == home / "themes"
    assert len(themes.errors) == 1 and "broken.yaml" in themes.errors[0]


def test_theme_file_needs_name_and_primary(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(ValueError, match="primary"):
        load_theme_file(bad)


async def test_unknown_theme_falls_back_with_a_notice() -> None:
    app = GroveApp(FakeEngine(), theme="no-such-theme", user_themes=False, stall_s=NO_STALL_S)
    assert app.theme == "grove-dark"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: bool(app._notifications), what="the notice")
        note = next(iter(app._notifications))
        assert "no-such-theme" in note.message and "grove-light" in note.message
        assert note.severity == "warning"


def test_format_never_invents_zero() -> None:
    assert fmt.size(None) == "-" and fmt.percent(None) == "-"
    assert fmt.size(0) == "0 B" and fmt.size(3 * 1024 * 1024) == "3.0 MiB"
    assert fmt.age(0, 100) == "-" and fmt.age(40, 100) == "1m00s"
    assert fmt.pair(None, None) == "-" and fmt.pair(0, None) == "0B/-"
    assert fmt.pair(340 * 1024, 12 << 20) == "340K/12M"
    # At most four characters each, so a pair fits its column.
    for n in (0, 999, 1000, 9 * 1024, 10189, 1022976, 1024000, 5 << 30, 1 << 60):
        assert len(fmt.short_size(n)) <= 4, n


def test_table_leaves_out_the_least_useful_columns_first() -> None:
    def keys(width: int, columns: tuple[Column, ...] = COLUMNS) -> list[str]:
        return [c.key for c in fit_columns(columns, width)]

    every = [c.key for c in COLUMNS]
    assert keys(500) == every
    assert keys(sum(c.width + 2 for c in COLUMNS)) == every
    # The 140-column terminal of the snapshots: the table gets 104.
    assert keys(104) == [k for k in every if k not in ("shared_mem", "age")]
    # Two less: age comes back in the room VMM overhead leaves.
    assert keys(102) == [k for k in every if k not in ("shared_mem", "vmm")]
    narrow = keys(10)  # nothing optional is left; the table scrolls
    assert narrow == [k for k in every if k not in OPTIONAL] and "network" in narrow
    assert keys(104, FLEET_COLUMNS)[:2] == ["host", "name"]


def test_both_gateways_satisfy_the_protocol() -> None:
    assert isinstance(FakeEngine(), EngineGateway)
    assert isinstance(GrpcGateway(Paths(Path("/nonexistent"))), EngineGateway)


class _Engine:
    """A grpc.aio server on a unix socket that serves only Status (and, given a sandbox,
    ListSandboxes): every other call is UNIMPLEMENTED, as an engine of another build."""

    def __init__(self, api_version: int = API_VERSION, sandbox: pb.Sandbox | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="gw-", dir="/tmp"))  # short: sun_path
        self.paths = Paths(self.home)
        self.api_version = api_version
        self.sandbox = sandbox
        self.server = grpc.aio.server()

    async def _status(self, request: pb.Empty, context: object) -> pb.EngineStatus:
        return pb.EngineStatus(
            pid=1, socket=str(self.paths.socket), version="test", api_version=self.api_version
        )

    async def _sandboxes(self, request: pb.ListSandboxesRequest, context: object) -> pb.SandboxList:
        return pb.SandboxList(sandboxes=[self.sandbox] if self.sandbox else [])

    async def __aenter__(self) -> _Engine:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Status": grpc.unary_unary_rpc_method_handler(
                self._status,
                request_deserializer=pb.Empty.FromString,
                response_serializer=pb.EngineStatus.SerializeToString,
            )
        }
        if self.sandbox is not None:
            handlers["ListSandboxes"] = grpc.unary_unary_rpc_method_handler(
                self._sandboxes,
                request_deserializer=pb.ListSandboxesRequest.FromString,
                response_serializer=pb.SandboxList.SerializeToString,
            )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grove.v1.Engine", handlers),)
        )
        try:
            self.server.add_insecure_port(f"unix:{self.paths.socket}")
            await self.server.start()
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(None)
        shutil.rmtree(self.home, ignore_errors=True)


CALLS = [
    ("list_environments", ()),
    ("pull_environment", ("debian:12",)),
    ("create_sandbox", ("debian:12",)),
    ("exec_capture", ("x", ["true"])),
    ("watch", ()),
    ("lineage", ()),
    ("fork", ("x", 2)),
    ("snapshot", ("x", "s")),
    ("metering_stream", ()),
    ("metering_history", ("x",)),
    ("reset_sandbox", ("x",)),
    ("open_shell", ("x", 80, 24)),
    ("list_shells", ("x",)),
    ("list_services", ("x",)),
    ("start_service", ("x", "w", ["t"])),
    ("stop_service", ("x", "w")),
    ("service_logs", ("x", "w")),
]


@pytest.mark.parametrize("method, args", CALLS, ids=[c[0] for c in CALLS])
async def test_grpc_gateway_calls_an_engine_lacks_are_a_grove_error(
    method: str,
    args: tuple,  # type: ignore[type-arg]
) -> None:
    """No per-call feature probing: a call the engine does not serve is one clear GroveError
    (with a remedy), connecting lazily on the first call."""
    async with _Engine() as engine:
        gateway = GrpcGateway(engine.paths, autostart=False)
        try:
            with pytest.raises(GroveError) as caught:
                result = getattr(gateway, method)(*args)
                await (anext(aiter(result)) if hasattr(result, "__aiter__") else result)
            assert caught.value.code == "api_mismatch" and caught.value.remedy
        finally:
            await gateway.close()


async def test_grpc_gateway_refuses_an_engine_of_another_api_version() -> None:
    async with _Engine(api_version=API_VERSION + 1) as engine:
        gateway = GrpcGateway(engine.paths, autostart=False)
        with pytest.raises(GroveError) as caught:
            await gateway.connect()
        assert caught.value.code == "api_mismatch" and caught.value.remedy
        with pytest.raises(GroveError) as again:  # the first call connects: refused the same
            await gateway.list_sandboxes()
        assert again.value.code == "api_mismatch"
        await gateway.close()


async def test_grpc_gateway_converts_the_sdk_models() -> None:
    sandbox = pb.Sandbox(
        id="sb-1", name="", environment="debian:12", phase="stopped", vcpus=1, mem_mib=256
    )
    async with _Engine(sandbox=sandbox) as engine:
        gateway = GrpcGateway(engine.paths, autostart=False)
        try:
            assert gateway.description == str(engine.paths.socket)
            (listed,) = await gateway.list_sandboxes()  # connects lazily
            # The SDK's None ("no datum") becomes the dashboard's "" where its models use that.
            assert listed == SandboxInfo(
                "sb-1", "", "debian:12", "stopped", vcpus=1, mem_mib=256, pid=None
            )
            assert listed.label == "sb-1"
            info = await gateway.status()
            assert info.version == "test" and info.host_cpus and info.host_mem_bytes
        finally:
            await gateway.close()


def test_grpc_gateway_flattens_lineage_and_keeps_no_datum() -> None:
    tree = sdk.LineageNode(
        "env:debian:12",
        "environment",
        "debian:12",
        children=(
            sdk.LineageNode(
                "sb-1",
                "sandbox",
                "web",
                "running",
                children=(sdk.LineageNode("snap-1", "snapshot", ""),),
            ),
        ),
    )
    nodes = lineage_nodes([tree])
    assert [(n.id, n.parent_id, n.label, n.phase) for n in nodes] == [
        ("env:debian:12", "", "debian:12", ""),
        ("sb-1", "env:debian:12", "web", "running"),
        ("snap-1", "sb-1", "snap-1", ""),
    ]
    sample = meter_sample(
        sdk.MeterSample(
            sampled_at=None,
            interval_s=1.0,
            sandboxes=(sdk.SandboxMeter("sb-1", "web", "running", unique_mem_bytes=0),),
            host=sdk.HostMeter(cow_aware_mem_bytes=5),
        )
    )
    (meter,) = sample.sandboxes
    assert meter.unique_mem == 0 and meter.shared_mem is None and meter.cpu_percent is None
    assert meter.net_rx is None and meter.net_tx is None
    assert sandbox_info(sdk.Sandbox("sb-1", "", "e", "running", 1, 1)).network == ""
    assert sandbox_info(sdk.Sandbox("sb-1", "", "e", "running", 1, 1, network="off")).network == (
        "off"
    )
    busy = sdk.SandboxMeter("sb-1", "w", "running", net_rx_bytes=0, net_tx_bytes=7)
    traffic = meter_sample(sdk.MeterSample(None, 1.0, (busy,)))
    assert (traffic.sandboxes[0].net_rx, traffic.sandboxes[0].net_tx) == (0, 7)
    assert sample.host.mem_cow == 5 and sample.host.mem_naive is None


async def test_grpc_gateway_without_engine_is_a_grove_error(tmp_path: Path) -> None:
    gateway = GrpcGateway(Paths(tmp_path), autostart=False)
    with pytest.raises(GroveError) as caught:
        await gateway.connect()
    assert caught.value.code == "engine_unreachable" and "grove engine start" in caught.value.remedy


def test_derive_lineage_nests_forks_and_roots_orphans() -> None:
    sandboxes = [
        SandboxInfo("a", "a", "debian:12", "running"),
        SandboxInfo("b", "b", "debian:12", "running", parent_id="a"),
        SandboxInfo("c", "c", "debian:12", "running", parent_id="gone"),
        SandboxInfo("d", "d", "alpine:3", "stopped"),
    ]
    nodes = {n.id: n for n in derive_lineage([EnvironmentInfo("debian:12")], sandboxes)}
    assert nodes["a"].parent_id == "env:debian:12"
    assert nodes["b"].parent_id == "a"
    assert nodes["c"].parent_id == ""  # orphan: at the root
    assert nodes["d"].parent_id == "env:alpine:3" and "env:alpine:3" in nodes


async def test_demo_builds_a_family_with_a_service_and_a_shell() -> None:
    engine = FakeEngine()
    app = GroveApp(engine, demo=True, user_themes=False, stall_s=NO_STALL_S)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        screen = app.screen
        assert isinstance(screen, MainScreen)
        await wait_for(
            pilot,
            lambda: any(n.title == "Demo ready" for n in app._notifications),
            what="the demo to finish",
        )
        sandboxes = screen.state.hosts["local"].sandboxes
        await wait_for(pilot, lambda: len(sandboxes) == 10, what="the demo family")
        # `web` exists in the fake already, so the tour picks a free name.
        by_name = {s.name: s for s in sandboxes.values()}
        web = by_name["web2"]
        assert by_name["web2-fork-1"].parent_id == web.id
        assert by_name["web2-fork-1-1"].parent_id == by_name["web2-fork-1"].id
        assert "pull debian:12" in engine.calls
        assert f"service start {web.id} http" in engine.calls
        assert f"service start {by_name['web2-fork-2'].id} memhog" in engine.calls
        assert screen.state.selected == key(by_name["web2-fork-2"].id)
        views = screen.query_one(ShellsPane).views
        assert [v.sandbox_id for v in views] == [key(web.id)]
        assert [p.service for p in screen.query(ServiceLogPane)] == ["http"]
        assert not [n for n in app._notifications if n.severity == "error"]


async def test_demo_stops_with_the_remedy() -> None:
    engine = FakeEngine(features={"metering"})  # an engine without fork
    app = GroveApp(engine, demo=True, user_themes=False, stall_s=NO_STALL_S)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(
            pilot,
            lambda: any(n.title == "Demo" and n.severity == "warning" for n in app._notifications),
            what="the demo to stop",
        )
        messages = " ".join(n.message for n in app._notifications)
        assert "services" in messages  # the first step this engine cannot do
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert not screen.query_one("#activity").display


async def test_fake_mode_runs_live() -> None:
    from tui.app import make_app

    app = make_app(fake=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        screen = app.screen
        assert isinstance(screen, MainScreen)
        host = screen.state.hosts["local"]
        await wait_for(pilot, lambda: len(host.sandboxes) == 6 and host.meters.ts is not None)
        first = host.meters.ts
        await wait_for(pilot, lambda: host.meters.ts != first, timeout=5, what="a live sample")


async def palette_offers(pilot: Pilot[None], text: str) -> None:
    """The palette's search has run: its first, highlighted hit is the command named text."""

    def top_hit() -> str:
        hits = pilot.app.screen.query_one(CommandList)
        if not hits.option_count or hits.highlighted != 0:
            return ""
        return str(hits.get_option_at_index(0).prompt)

    await wait_for(pilot, lambda: top_hit().startswith(text), what=f"{text!r} in the palette")


async def test_palette_switches_theme() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: CommandPalette.is_open(app), what="palette")
        await pilot.press(*"Theme: projector")
        await palette_offers(pilot, "Theme: projector")  # the palette's search is debounced
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "projector", what="theme switch")


async def test_palette_runs_sandbox_actions() -> None:
    engine = FakeEngine()
    app = fake_app(gateway=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        screen.metering_table.select_sandbox(key("sb-2b7e41d5"))
        await pilot.pause()
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: CommandPalette.is_open(app), what="palette")
        await pilot.press(*"Stop web-fork-1")
        await palette_offers(pilot, "Stop web-fork-1")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "stop sb-2b7e41d5" in engine.calls, what="stop call")


@pytest.mark.parametrize(
    "text, probe",
    [
        ("", None),
        ("8000", ("tcp", "127.0.0.1:8000")),
        (":8000", ("tcp", "127.0.0.1:8000")),
        ("0.0.0.0:80", ("tcp", "0.0.0.0:80")),
        ("tcp:8000", ("tcp", "127.0.0.1:8000")),
        ("http://127.0.0.1:8000/health", ("http", "http://127.0.0.1:8000/health")),
        ("file:/run/ready", ("file", "/run/ready")),
        ("command:test -e /tmp/x", ("command", "test -e /tmp/x")),
    ],
)
def test_parse_probe(text: str, probe: tuple[str, str] | None) -> None:
    assert parse_probe(text) == probe


@pytest.mark.parametrize("text", ["nonsense", "file:", "tcp:"])
def test_parse_probe_refuses_with_a_remedy(text: str) -> None:
    with pytest.raises(GroveError) as caught:
        parse_probe(text)
    assert caught.value.remedy


def test_parse_command() -> None:
    assert parse_command("python3 -c 'print(1)'") == ["python3", "-c", "print(1)"]
    for bad in ("", "echo 'unclosed"):
        with pytest.raises(GroveError):
            parse_command(bad)


def test_meter_history_seed_puts_older_samples_first() -> None:
    history = MeterHistory(size=5)
    history.add(
        MeterSample(ts=100.0, sandboxes=(SandboxMeter("a", unique_mem=10, cpu_percent=1.0),))
    )
    older = [
        SandboxMeter("a", unique_mem=n, cpu_percent=None, sampled_at=90.0 + n) for n in range(1, 12)
    ]  # 91..101: the last two overlap the live sample
    assert history.seed("a", older)
    assert history.memory("a") == [6.0, 7.0, 8.0, 9.0, 10.0]  # kept: the newest 5, in order
    assert history.cpu("a") == [1.0]  # no datum is skipped, never drawn as zero
    assert not history.seed("a", older)  # nothing older than what is there now


def test_throttled_keeps_stage_changes_and_done() -> None:
    now = [0.0]
    heard: list[TransferProgress] = []
    told = throttled(heard.append, per_second=10, clock=lambda: now[0])
    for i, stage in enumerate(["planning", "sending", "sending", "sending", "done"]):
        now[0] = i * 0.03  # 30 ms apart: faster than ten a second
        told(TransferProgress(stage, i))
    now[0] = 0.5
    told(TransferProgress("sending", 9))  # after the interval: through
    assert [(p.stage, p.done) for p in heard] == [
        ("planning", 0),
        ("sending", 1),
        ("done", 4),
        ("sending", 9),
    ]


def test_transfer_line_text_says_progress_rate_and_outcome() -> None:
    t = Transfer("push", "web", "./proj", "/root/proj")
    assert "push ./proj → /root/proj  starting…" in str(transfer_text(t))
    t.progress = TransferProgress("sending", 12_582_912, 29_884_416, 3, elapsed=0.1)
    assert t.rate is None  # too early for a rate
    assert str(transfer_text(t)).endswith("42%  12.0/28.5 MiB")
    t.progress = TransferProgress("sending", 12_582_912, 29_884_416, 3, elapsed=1.32)
    assert str(transfer_text(t)).endswith("42%  12.0/28.5 MiB  9.1 MiB/s")
    t.result = TransferResult("push", "./proj", "/root/proj", 29_884_416, 3, 3.1)
    assert str(transfer_text(t)).endswith(
        "pushed 3 files to /root/proj  28.5 MiB in 3.1 s, 9.2 MiB/s"
    )
    failed = Transfer("pull", "web", "/root/x", "./x", error="no such file")
    assert str(transfer_text(failed)).endswith("pull /root/x → ./x failed: no such file")
