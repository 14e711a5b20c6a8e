"""The guest image pipeline: layers, manifests, cache behaviour, errors, and a real boot.

The session fixture builds debian:12 once (about 45 s: debootstrap) into a temporary GROVE
home. Set ``GROVE_TEST_IMAGE_CACHE=/some/dir`` to build into that directory instead and keep
it: later runs (and the engine tests' image cache, which reads the same variable) then find
every layer cached and skip the build. Needs root (debootstrap) and the host packages in
``guest.image.hosttools.REQUIRED_HOST_PACKAGES``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from guest.image import cpio, fsutil, hostparams, hosttools, kmod, mirror, payload, rootfs
from guest.image.builder import (
    EnvironmentImage,
    build_environment,
    inspect_environment,
    list_environments,
    needs_rebuild,
    prune,
)
from guest.image.errors import ImageBuildError
from guest.image.recipes import KernelRef, get_recipe, known_environments, layer_keys

ENV = "debian:12"
BOOT_TIMEOUT = 90.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="image builds need root")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EnvironmentImage, float]:
    """(home, image, seconds the first build call took)."""
    cache = os.environ.get("GROVE_TEST_IMAGE_CACHE")
    home = Path(cache) if cache else tmp_path_factory.mktemp("grove-home")
    home.mkdir(parents=True, exist_ok=True)
    stages: list[str] = []
    started = time.monotonic()
    image = build_environment(ENV, home, progress=lambda s, f: stages.append(s))
    elapsed = time.monotonic() - started
    print(f"\n[image] {ENV} ready in {elapsed:.1f}s ({len(stages)} progress calls)")
    return home, image, elapsed


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a layer directory by hard links (layers are immutable)."""
    shutil.copytree(src, dst, copy_function=os.link)


# ---------------------------------------------------------------- layers and manifests


def test_layers_and_manifests(built: tuple[Path, EnvironmentImage, float]) -> None:
    home, image, _ = built
    for layer, key in (
        ("kernel", image.kernel_key),
        ("initramfs", image.initramfs_key),
        ("rootfs", image.rootfs_key),
    ):
        directory = home / "images" / layer / key
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["layer"] == layer and manifest["key"] == key
        for name, size in manifest["files"].items():
            assert (directory / name).stat().st_size == size
    assert image.kernel.parent.name == image.kernel_key

    env_manifest = json.loads((home / "envs" / "debian_12" / "manifest.json").read_text())
    assert image.manifest == home / "envs" / "debian_12" / "manifest.json"
    assert env_manifest["name"] == ENV
    assert env_manifest["recipe_hash"] == image.recipe_hash
    assert env_manifest["layers"] == {
        "kernel": image.kernel_key,
        "initramfs": image.initramfs_key,
        "rootfs": image.rootfs_key,
    }
    assert env_manifest["image"]["rootfs"] == str(image.rootfs)

    assert image.kernel.read_bytes()[:4] == b"\x7fELF"
    assert image.kernel_release.endswith("-cloud-amd64")
    assert image.kernel_hz == 250
    members = {e.name: e for e in cpio.unpack(gzip.decompress(image.initramfs.read_bytes()))}
    for name in (
        "init",
        "grove/init",
        "bin/busybox",
        "dev/console",
        "grove/guest/protocol.py",
        "lib/modules/grove/order",
        "lib/modules/grove/virtio_blk.ko",
    ):
        assert name in members, name
    assert 50 * 2**20 < image.rootfs_bytes < 200 * 2**20, image.rootfs_bytes
    assert [e.name for e in list_environments(home)] == [ENV]
    assert inspect_environment(home, ENV) == image
    assert not needs_rebuild(home, ENV)


def test_rootfs_contents(built: tuple[Path, EnvironmentImage, float]) -> None:
    home, image, _ = built
    packages = (home / "images" / "rootfs" / image.rootfs_key / rootfs.PACKAGES).read_text()
    names = {line.split()[0] for line in packages.splitlines()}
    assert {"python3", "python3.11", "procps", "iproute2", "vim-tiny", "less", "bash"} <= names
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image.rootfs)],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] >= 2 * 2**30


def test_module_order_puts_dependencies_first(built: tuple[Path, EnvironmentImage, float]) -> None:
    home, image, _ = built
    layer = home / "images" / "kernel" / image.kernel_key
    order = (layer / "modules.order").read_text().split()
    assert {"virtio_mmio", "virtio_blk", "virtio_console", "virtio_net", "virtio_rng"} <= set(order)
    for position, name in enumerate(order):
        for dep in kmod.depends(layer / "modules" / f"{name}.ko"):
            assert dep in order[:position], f"{name} needs {dep} loaded first"


def test_cache_hit_is_fast(built: tuple[Path, EnvironmentImage, float]) -> None:
    home, image, _ = built
    calls: list[str] = []
    started = time.monotonic()
    again = build_environment(ENV, home, progress=lambda s, f: calls.append(s))
    elapsed = time.monotonic() - started
    # A hit only reads the cache index: seconds would mean it ran a build step.
    assert elapsed < 5, f"cache hit took {elapsed:.2f}s"
    assert again == image
    assert calls == ["cached"]


def test_agent_edit_changes_only_initramfs_key(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for rel, path in payload.payload_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / rel)
    before = payload.payload_digest(root)
    assert before == payload.payload_digest()
    (root / "guest" / "agent").mkdir(exist_ok=True)
    (root / "guest" / "agent" / "extra.py").write_text("X = 1\n")
    after = payload.payload_digest(root)
    assert after != before

    recipe = get_recipe(ENV)
    ref = KernelRef("linux-image-6.1.0-0-cloud-amd64", "6.1.0-0")
    a, b = layer_keys(recipe, ref, before), layer_keys(recipe, ref, after)
    assert (a.kernel, a.rootfs) == (b.kernel, b.rootfs)
    assert a.initramfs != b.initramfs


def test_agent_edit_rebuilds_only_initramfs(
    built: tuple[Path, EnvironmentImage, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, image, _ = built
    root = tmp_path / "src"
    for rel, path in payload.payload_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / rel)
    (root / "guest" / "agent").mkdir(exist_ok=True)
    (root / "guest" / "agent" / "edited_for_test.py").write_text("EDITED = True\n")
    layers_before = {p.name for p in (home / "images" / "rootfs").iterdir()}

    monkeypatch.setattr(payload, "SOURCE_ROOT", root)
    try:
        started = time.monotonic()
        edited = build_environment(ENV, home)
        elapsed = time.monotonic() - started
        assert (edited.kernel_key, edited.rootfs_key) == (image.kernel_key, image.rootfs_key)
        assert edited.initramfs_key != image.initramfs_key
        assert edited.recipe_hash != image.recipe_hash
        assert {p.name for p in (home / "images" / "rootfs").iterdir()} == layers_before
        # No debootstrap (a minute or more): the rootfs layer set above did not change either.
        assert elapsed < 60, f"initramfs-only rebuild took {elapsed:.1f}s"
        names = {e.name for e in cpio.unpack(gzip.decompress(edited.initramfs.read_bytes()))}
        assert "grove/guest/agent/edited_for_test.py" in names
    finally:
        monkeypatch.undo()
        restored = build_environment(ENV, home)
    assert restored.initramfs_key == image.initramfs_key


def test_prune_removes_only_unreferenced(built: tuple[Path, EnvironmentImage, float]) -> None:
    home, image, _ = built
    orphan = home / "images" / "initramfs" / ("0" * 64)
    orphan.mkdir()
    (orphan / "initramfs.cpio.gz").write_bytes(os.urandom(256 * 1024))
    (orphan / "manifest.json").write_text("{}")
    dead = home / "images" / "rootfs" / ".tmp-deadbeef-999999999-0000"  # pid beyond pid_max
    dead.mkdir()
    (dead / "rootfs.raw").write_bytes(b"x" * 8192)
    alive = home / "images" / "rootfs" / f".tmp-cafe-{os.getppid()}-0000"  # a live builder
    alive.mkdir()
    kept = home / "images" / "kernel" / ("1" * 64)  # unreferenced but in use
    kept.mkdir()
    (kept / "vmlinux").write_bytes(b"\x7fELF")
    try:
        freed = prune(home, keep=[kept / "vmlinux"])
        assert freed >= 256 * 1024
        assert not orphan.exists() and not dead.exists()
        assert alive.exists() and kept.exists()
        survivor = inspect_environment(home, ENV)  # everything referenced survives
        assert survivor.kernel.exists() and survivor.initramfs.exists()
        assert survivor.rootfs == image.rootfs and survivor.rootfs.exists()
        assert prune(home, keep=[kept]) == 0
    finally:
        shutil.rmtree(alive, ignore_errors=True)
        shutil.rmtree(kept, ignore_errors=True)


# ---------------------------------------------------------------- errors


def test_unknown_environment() -> None:
    with pytest.raises(ImageBuildError) as info:
        build_environment("debian:99", Path("/nonexistent-grove-home"))
    assert "debian:99" in info.value.message
    assert "debian:12" in info.value.remedy
    assert ENV in known_environments()


def test_inspect_unbuilt(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError) as info:
        inspect_environment(tmp_path, ENV)
    assert "not built" in info.value.message and "build" in info.value.remedy


def test_missing_tool_names_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosttools, "which", lambda tool: None)
    with pytest.raises(ImageBuildError) as info:
        hosttools.require("debootstrap")
    assert info.value.remedy == "apt-get install debootstrap"
    with pytest.raises(ImageBuildError) as info:
        hosttools.require("mkfs.ext4")
    assert info.value.remedy == "apt-get install e2fsprogs"
    assert set(hosttools.REQUIRED_HOST_PACKAGES) >= {"debootstrap", "qemu-utils", "lz4"}


def test_rootfs_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ImageBuildError) as info:
        rootfs.build(get_recipe(ENV), tmp_path, "f" * 64, lambda s, f: None)
    assert "root" in info.value.message and info.value.remedy


def test_unreachable_mirror_fails_cleanly(
    built: tuple[Path, EnvironmentImage, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed build says why, and leaves no temp dir and no environment behind."""
    src_home, image, _ = built
    home = tmp_path / "home"
    _link_tree(
        src_home / "images" / "kernel" / image.kernel_key,
        home / "images" / "kernel" / image.kernel_key,
    )
    monkeypatch.setenv(mirror.MIRROR_ENV, "http://127.0.0.1:9/debian")  # discard port: refused
    with pytest.raises(ImageBuildError) as info:
        build_environment(ENV, home)
    assert "cannot reach Debian mirror http://127.0.0.1:9/debian" in info.value.message
    assert mirror.MIRROR_ENV in info.value.remedy
    assert not list((home / "images").glob("*/.tmp-*"))
    assert not (home / "images" / "rootfs").exists() or not any(
        (home / "images" / "rootfs").iterdir()
    )
    assert not (home / "envs").exists()


class _Stop(Exception):
    pass


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_interrupted_build_leaves_nothing_behind(
    built: tuple[Path, EnvironmentImage, float], tmp_path: Path
) -> None:
    """Stopped mid-debootstrap: no process, mount, temp dir or environment survives."""
    src_home, image, _ = built
    home = tmp_path / "home"
    _link_tree(
        src_home / "images" / "kernel" / image.kernel_key,
        home / "images" / "kernel" / image.kernel_key,
    )

    def progress(stage: str, fraction: float | None) -> None:
        if stage.startswith("rootfs: configuring"):  # inside the chroot, /proc mounted
            raise _Stop

    with pytest.raises(_Stop):
        build_environment(ENV, home, progress=progress)
    assert not _processes_mentioning(str(home))
    assert not fsutil.mounts_under(home)
    assert not list((home / "images").glob("*/.tmp-*"))
    assert not (home / "envs").exists()


def test_debootstrap_failure_reports_its_log(tmp_path: Path) -> None:
    recipe = get_recipe(ENV)
    broken = type(recipe)(
        name="broken", suite=recipe.suite, packages=(*recipe.packages, "grove-no-such-package")
    )
    with pytest.raises(ImageBuildError) as info:
        rootfs.build(broken, tmp_path, "f" * 64, lambda s, f: None)
    assert "debootstrap failed" in info.value.message
    assert "grove-no-such-package" in info.value.message
    log = re.search(r"see (\S+);", info.value.remedy)
    assert log is not None and Path(log.group(1)).is_file()  # the log outlives the build dir
    assert not (tmp_path / "root").exists()


# ---------------------------------------------------------------- small units


def test_cpio_roundtrip() -> None:
    entries = [
        cpio.directory("bin"),
        cpio.file("bin/x", b"abc", 0o755),
        cpio.symlink("bin/y", "x"),
        cpio.chardev("console", 5, 1),
    ]
    back = cpio.unpack(cpio.pack(entries))
    assert back == entries


def test_mirror_from_apt_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mirror.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "other.list").write_text(
        "deb [arch=amd64] http://other.example/debian bookworm main\n"
    )
    assert mirror.find_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    assert mirror.find_mirror("trixie", tmp_path) == mirror.DEFAULT_MIRROR
    monkeypatch.setenv(mirror.MIRROR_ENV, "http://override.example/debian/")
    assert mirror.find_mirror("bookworm", tmp_path) == "http://override.example/debian"


def test_host_params() -> None:
    assert 100_000 < hostparams.tsc_khz() < 10_000_000
    assert hostparams.lpj() > 10_000
    line = hostparams.kernel_cmdline("imgtest")
    assert "grove.hostname=imgtest" in line and "tsc_early_khz=" in line


# ---------------------------------------------------------------- boot


def _qemu(image: EnvironmentImage, work: Path, append: str) -> subprocess.Popen[bytes]:
    """The DESIGN.md command line, with the serial console in work/console.log."""
    overlay = work / "disk.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(image.rootfs),
            str(overlay),
        ],
        check=True,
    )
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg,tb-size=16",
        "-M",
        "microvm,memory-backend=mem",
        "-m",
        "512M",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initramfs),
        "-append",
        append,
        "-object",
        f"memory-backend-file,id=mem,size=512M,mem-path={work / 'mem'},share=on",
        "-drive",
        f"file={overlay},if=none,id=d0,format=qcow2,cache=unsafe,discard=unmap",
        "-device",
        "virtio-blk-device,drive=d0",
        "-device",
        "virtio-serial-device",
        "-chardev",
        f"socket,id=ctl,path={work / 'ctl.sock'},server=on,wait=off",
        "-device",
        "virtserialport,chardev=ctl,name=ctl",
        "-serial",
        f"file:{work / 'console.log'}",
    ]
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_console(work: Path, proc: subprocess.Popen[bytes], pattern: str) -> float:
    started = time.monotonic()
    console = work / "console.log"
    while time.monotonic() - started < BOOT_TIMEOUT:
        text = console.read_text(errors="replace") if console.exists() else ""
        if re.search(pattern, text):
            return time.monotonic() - started
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    text = console.read_text(errors="replace") if console.exists() else "(no console)"
    state = "still running" if proc.poll() is None else f"exited {proc.returncode}"
    if proc.poll() is not None and proc.stderr is not None:
        state += ": " + proc.stderr.read().decode(errors="replace")[-2000:]
    raise AssertionError(f"no {pattern!r} on the console (QEMU {state}):\n{text[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.vm
def test_boot_to_stage2(built: tuple[Path, EnvironmentImage, float], tmp_path: Path) -> None:
    image = inspect_environment(built[0], ENV)  # current layers, even if a test rebuilt one
    before = subprocess.run(["sha256sum", str(image.rootfs)], capture_output=True).stdout
    append = hostparams.kernel_cmdline("imgtest", hz=image.kernel_hz)
    proc = _qemu(image, tmp_path, append)
    try:
        seconds = _wait_console(tmp_path, proc, r"grove-init: stage2 ready")
        print(f"\n[image] boot to stage2 ready: {seconds:.1f}s")
        text = (tmp_path / "console.log").read_text(errors="replace")
        assert "grove-init: hostname imgtest" in text
        assert "ERROR" not in text
    finally:
        _stop(proc)
    assert subprocess.run(["sha256sum", str(image.rootfs)], capture_output=True).stdout == before


@pytest.mark.vm
def test_boot_failure_is_reported_and_powers_off(
    built: tuple[Path, EnvironmentImage, float], tmp_path: Path
) -> None:
    image = inspect_environment(built[0], ENV)
    append = hostparams.kernel_cmdline("imgtest", hz=image.kernel_hz).replace(
        "root=/dev/vda", "root=/dev/vdz"
    )
    proc = _qemu(image, tmp_path, append)
    try:
        _wait_console(tmp_path, proc, r"grove-init: ERROR root device /dev/vdz did not appear")
        assert proc.wait(timeout=60) == 0  # poweroff -f ends QEMU by itself
    finally:
        _stop(proc)
