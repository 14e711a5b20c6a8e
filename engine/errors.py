"""One error type for every failure a user can see: a code, a one-line cause and a remedy."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class GroveError(Exception):
    code: str
    message: str
    remedy: str = ""

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "remedy": self.remedy}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> GroveError:
        data = json.loads(text)
        return cls(str(data["code"]), str(data["message"]), str(data.get("remedy", "")))


def not_found(kind: str, ref: str, remedy: str) -> GroveError:
    return GroveError(f"{kind}_not_found", f"no {kind} named or with id '{ref}'", remedy)


def invalid(message: str, remedy: str) -> GroveError:
    return GroveError("invalid_argument", message, remedy)
