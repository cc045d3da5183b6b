"""The one error hierarchy of the project.

Every failure a user can cause or meet is a ``PlatformError`` with a stable ``code``, an HTTP
``status`` and a one-line ``message``. The server's error middleware turns it into the JSON
envelope of DESIGN.md §7; the CLI prints its message on one line.
"""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail or {}
        if code:
            self.code = code

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}

    @classmethod
    def from_envelope(cls, status: int, body: dict[str, Any]) -> PlatformError:
        """Rebuild the matching error on the client side of the API."""
        err = body.get("error", {}) if isinstance(body, dict) else {}
        klass = next((k for k in _all_subclasses(cls) if k.status == status), cls)
        e = klass(str(err.get("message") or f"HTTP {status}"), detail=err.get("detail") or {}, code=err.get("code"))
        e.status = status
        return e


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


class BadRequest(PlatformError):
    status, code = 400, "bad_request"


class Unauthorized(PlatformError):
    status, code = 401, "unauthorized"


class Forbidden(PlatformError):
    status, code = 403, "forbidden"


class NotFound(PlatformError):
    status, code = 404, "not_found"


class Conflict(PlatformError):
    status, code = 409, "conflict"


class TooLarge(PlatformError):
    status, code = 413, "too_large"


class InvalidPackage(PlatformError):
    status, code = 422, "invalid_package"


class TooManyRequests(PlatformError):
    status, code = 429, "too_many_requests"


class UpstreamError(PlatformError):
    status, code = 502, "upstream_error"


class UpstreamTimeout(PlatformError):
    status, code = 504, "upstream_timeout"
