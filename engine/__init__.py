"""Grove engine: the daemon that owns microVMs, and the API and CLI that drive it."""

__version__ = "0.1.0"
