"""The other hosts of the fleet screenshot: a second real engine, reached the way a remote
KVM host is (a real OpenSSH server on 127.0.0.1 and `ssh://` discovery), running a small
family of forks; and a host that refuses connections, to show how a host that is down looks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import engine_paths, private_engine
from bench.sshd import GROVE, Sshd
from tui.engine.gateway import EngineGateway
from tui.engine.grpc_gateway import GrpcGateway

ENV = "debian:12"
IMAGE_CACHE = Path(os.environ.get("GROVE_TEST_IMAGE_CACHE", "/var/tmp/grove-test-images"))
#: Nothing listens on port 1 of the loopback: connections are refused at once.
DOWN = "ssh://grove@127.0.0.1:1"


@contextmanager
def second_host() -> Iterator[dict[str, EngineGateway]]:
    from guest.image.builder import build_environment

    build_environment(ENV, IMAGE_CACHE)
    saved = {k: os.environ.get(k) for k in ("GROVE_HOME", "HOME")}
    with private_engine(IMAGE_CACHE) as client:
        _restore(saved)  # the first engine keeps its home
        for _ in client.pull(ENV, warm=True):
            pass
        api = client.create(ENV, name="api")
        client.service_start(api.id, "http", ["python3", "-m", "http.server", "8080"])
        children = client.fork(api.id, replicas=3, name_prefix="api-fork").children
        client.fork(children[0].id, replicas=1, name_prefix=f"{children[0].name}")
        sshd = Sshd.start(forwarding=True)
        os.environ["HOME"] = str(sshd.home)  # this client's ~/.ssh trusts that server
        try:
            print(f"  second engine at {sshd.url(engine_paths(client).home, GROVE)}", flush=True)
            yield {
                "lab-2": GrpcGateway(host=sshd.url(engine_paths(client).home, GROVE)),
                "lab-3": GrpcGateway(host=DOWN),
            }
        finally:
            sshd.stop()
            _restore(saved)


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
