"""``ntk kernel``: NNGP/NTK Gram matrices of an architecture, computed here or on a server."""

from __future__ import annotations

from ntk.spec.limits import DEFAULT_SAMPLES

from .arrays import add_run_options, connect, engine_settings, read_array, read_spec, write_npz
from .errors import engine_errors, server_errors


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("kernel", help="compute K(x1, x2) and/or Θ(x1, x2) into an .npz")
    p.add_argument("--arch", required=True, help="architecture spec: a JSON file (docs/architecture.md)")
    p.add_argument("--x1", required=True, help=".npy (or .npz field x) of inputs")
    p.add_argument("--x2", help="second inputs (default: x1)")
    p.add_argument("--get", default="nngp,ntk", help="comma-separated: nngp, ntk")
    p.add_argument("--method", default="analytic", choices=("analytic", "monte_carlo"))
    # None: with --url the service's default, which is this one
    p.add_argument("--samples", type=int, help=f"networks averaged by monte_carlo (default: {DEFAULT_SAMPLES}, as "
                   "the service)")
    p.add_argument("--seed", type=int, default=0, help="seed of the monte_carlo networks")
    add_run_options(p, run, out="output .npz (fields nngp, ntk[, *_stderr])")


def run(args) -> int:
    spec = read_spec(args.arch)
    x1 = read_array(args.x1)
    x2 = None if args.x2 is None else read_array(args.x2)
    get = tuple(g.strip() for g in args.get.split(",") if g.strip())
    monte_carlo = args.method == "monte_carlo"
    if args.url:
        with server_errors(args.url), connect(args) as client:
            result = client.kernels(spec, x1, x2=x2, get=get, dtype=args.dtype, method=args.method,
                                    samples=args.samples if monte_carlo else None,
                                    seed=args.seed if monte_carlo else None)
    else:
        with engine_errors():
            result = compute_locally(spec, x1, x2, get, args)
    write_npz(args.out, result)
    return 0


def compute_locally(spec, x1, x2, get, args) -> dict:
    import torch

    from ntk.engine import kernel_fn
    from ntk.worker.allocator import keep_freed_memory

    keep_freed_memory()
    dtype, engine = getattr(torch, args.dtype), engine_settings(args.device)
    if args.method == "monte_carlo":
        from ntk.engine.monte_carlo import monte_carlo_kernel_fn

        samples = DEFAULT_SAMPLES if args.samples is None else args.samples
        out = monte_carlo_kernel_fn(spec, x1, x2, get=get, samples=samples, seed=args.seed, dtype=dtype,
                                    device=engine["device"])
    else:
        out = kernel_fn(spec, x1, x2, get=get, dtype=dtype, **engine)
    return {k: v.cpu().numpy() for k, v in out.items()}
