"""What the ``ntk`` command tells its user when something is wrong: one line, and an exit status.

A mistake the user can fix (a missing or unreadable file, an invalid architecture, a server that is
down or refuses the request) is a :class:`UserError`: ``main`` prints ``ntk: error: <message>`` on
stderr and exits 1, or 2 for a :class:`UsageError` (a wrong command line, as argparse exits). The
context managers below turn the engine's and the SDK's exceptions into such errors; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

from contextlib import contextmanager


class UserError(Exception):
    """A problem the user can fix; its message is printed as one line."""

    exit_status = 1

    def __init__(self, message: str):
        super().__init__(one_line(message))


class UsageError(UserError):
    """The command line asks for something that cannot work (exit 2, as for argparse's own errors)."""

    exit_status = 2


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


@contextmanager
def engine_errors():
    """Computing here: an invalid spec, inputs or options become a UserError naming the problem."""
    from pydantic import ValidationError

    from ntk.engine.kernel import NonFiniteKernel
    from ntk.engine.predict import PredictError
    from ntk.spec.architecture import SpecError, validation_errors

    try:
        yield
    except ValidationError as e:
        what = "invalid architecture" if e.title == "Architecture" else f"invalid {e.title}"
        raise UserError(f"{what}: " + "; ".join(f"{p['path']}: {p['message']}" for p in validation_errors(e)[:5])) from e
    except (SpecError, PredictError, NonFiniteKernel) as e:
        raise UserError(str(e)) from e


@contextmanager
def server_errors(url: str):
    """Computing on a server: what it refused (4xx), its failures, or no answer at all, as a UserError."""
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url {url}: give the server's address as http://host:port or https://...")
    try:
        import httpx
        from ntk_client import NetworkError, NTKError
    except ImportError as e:
        raise UserError("--url needs the Python SDK: pip install -e clients/python") from e

    try:
        yield
    except httpx.InvalidURL as e:
        raise UsageError(f"--url {url}: {e}") from e
    except NetworkError as e:
        raise UserError(f"no answer from {url}: {e}") from e
    except NTKError as e:
        raise UserError(f"{url}: {e}") from e


@contextmanager
def settings_errors():
    """An NTK_* environment variable the settings refuse, named as the user set it."""
    from pydantic import ValidationError

    try:
        yield
    except ValidationError as e:
        if e.title != "Settings":
            raise
        raise UserError("invalid setting: " + "; ".join(
            f"NTK_{'_'.join(map(str, err['loc'])).upper()}={err['input']!r}: {err['msg']}"
            for err in e.errors(include_url=False))) from e
