"""Typed errors carrying the service's RFC 9457 problem details.

Every error the service reports arrives as ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and, for validation, ``errors: [{"path", "message"}]``. The SDK raises the
subclass that matches the status so callers can catch what they can act on, and keeps every
problem field on the exception so nothing the server said is lost.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ._models import Job

__all__ = [
    "NTKError", "ValidationError", "AuthError", "NotFound", "RateLimited", "ServerError",
    "NetworkError", "JobFailed", "JobCancelled",
]


class NTKError(Exception):
    """Base class: anything the service reported as an error, or failure to reach it at all.

    Attributes mirror the problem object: ``type``, ``title``, ``status``, ``detail``, ``errors``
    (a list of ``{"path", "message"}``, empty unless the server named offending fields);
    ``problem`` is the whole decoded body and ``response`` the ``httpx.Response``, when there was one.
    """

    def __init__(
        self,
        detail: str,
        *,
        type: str = "about:blank",
        title: str | None = None,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        problem: dict[str, Any] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.detail = detail
        self.type = type
        self.title = title
        self.status = status
        self.errors = list(errors or [])
        self.problem = problem if problem is not None else {}
        self.response = response
        super().__init__(self._message())

    def _message(self) -> str:
        # The server's detail is what tells the user what to change, so it leads the message.
        head = f"{self.status} {self.title}: " if self.status and self.title else ""
        lines = [f"{head}{self.detail}"]
        lines += [f"  at {e.get('path', '?')}: {e.get('message', '')}" for e in self.errors]
        return "\n".join(lines)


class ValidationError(NTKError):
    """The request was rejected as invalid (400 malformed, 422 unprocessable); see ``errors``."""


class AuthError(NTKError):
    """Missing or wrong API key (401), or a key without access (403)."""


class NotFound(NTKError):
    """No such dataset, job or route (404)."""


class RateLimited(NTKError):
    """Still 429 Too Many Requests after the retries; ``retry_after`` is the server's last word, in seconds."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)


class ServerError(NTKError):
    """The service failed (5xx), still after the retries for 502/503/504."""


class NetworkError(NTKError):
    """The service could not be reached or did not answer in time, still after the retries.

    The underlying ``httpx`` error is the ``__cause__``.
    """


class JobFailed(NTKError):
    """A job ended ``failed``; the problem fields are the job's ``error``, and ``job`` is the Job."""

    def __init__(self, *args: Any, job: Job, **kwargs: Any) -> None:
        self.job = job
        super().__init__(*args, **kwargs)


class JobCancelled(NTKError):
    """A job ended ``cancelled`` (``DELETE /v1/jobs/{id}``, by this client or another)."""

    def __init__(self, *args: Any, job: Job, **kwargs: Any) -> None:
        self.job = job
        super().__init__(*args, **kwargs)


def _error_class(status: int) -> type[NTKError]:
    if status in (400, 422):
        return ValidationError
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFound
    if status == 429:
        return RateLimited
    if status >= 500:
        return ServerError
    return NTKError


def problem_fields(problem: dict[str, Any], *, default_status: int | None = None) -> dict[str, Any]:
    """The keyword arguments of :class:`NTKError` from a problem object (tolerating missing fields)."""
    status = problem.get("status", default_status)
    return {
        "detail": str(problem.get("detail") or problem.get("title") or "no detail given"),
        "type": problem.get("type", "about:blank"),
        "title": problem.get("title"),
        "status": status if isinstance(status, int) else default_status,
        "errors": problem.get("errors") if isinstance(problem.get("errors"), list) else None,
        "problem": problem,
    }


def parse_retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header, in either of its forms (delay or HTTP date)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    from datetime import datetime, timezone

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_from_response(response: httpx.Response) -> NTKError:
    """The typed exception for an error response, problem+json or not (a proxy's HTML 502, say)."""
    problem: dict[str, Any]
    try:
        body = json.loads(response.content)
        problem = body if isinstance(body, dict) else {"detail": str(body)}
    except ValueError:
        text = response.text.strip()
        problem = {"detail": text[:500] or response.reason_phrase}
    problem.setdefault("title", response.reason_phrase)
    fields = problem_fields(problem, default_status=response.status_code)
    # The HTTP status is authoritative for choosing the class, whatever the body claims.
    fields["status"] = response.status_code
    cls = _error_class(response.status_code)
    if cls is RateLimited:
        return RateLimited(**fields, response=response, retry_after=parse_retry_after(response))
    return cls(**fields, response=response)
