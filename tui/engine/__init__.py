"""The dashboard's view of the engine: one Protocol, a gRPC implementation and a fake.

Nothing here imports Textual, so gateways can be used and tested without a terminal.
"""

from tui.engine.gateway import EngineGateway, ShellSession, not_supported

__all__ = ["EngineGateway", "ShellSession", "not_supported"]
