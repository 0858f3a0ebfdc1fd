"""``ntk worker [--device cuda:0]``: one worker process, for a deployment with its own Redis."""

from __future__ import annotations

from .errors import UserError, settings_errors


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("worker", help="run one worker process against NTK_REDIS_URL")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: NTK_DEVICE, else auto)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import redis

    from ntk.core import logs
    from ntk.core.settings import get_settings
    from ntk.worker.runtime import run as run_worker

    with settings_errors():
        settings = get_settings()
    if args.device:
        settings = settings.model_copy(update={"device": args.device})
    logs.configure(settings)
    # checked before the worker starts its consumer threads, which would keep the process alive
    try:
        redis.Redis.from_url(settings.redis, socket_connect_timeout=5).ping()
    except redis.RedisError as e:
        raise UserError(f"cannot reach Redis at {settings.redis} (NTK_REDIS_URL): {e}") from e
    return run_worker(settings)
