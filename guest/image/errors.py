"""The one exception the image pipeline raises: a cause and what to do about it."""

from __future__ import annotations


class ImageBuildError(Exception):
    """A build, lookup or host check failed.

    ``message`` is a one-line cause; ``remedy`` is a one-line action the operator can take.
    The CLI prints both, so neither should repeat the other.
    """

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.remedy})" if self.remedy else self.message
