"""``ntk kernel``: NNGP/NTK Gram matrices of an architecture, computed here or on a server."""

from __future__ import annotations

from .arrays import add_remote_options, dtype_name, read_array, read_spec, write_npz


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("kernel", help="compute K(x1, x2) and/or Θ(x1, x2) into an .npz")
    p.add_argument("--arch", required=True, help="architecture spec (JSON file, SPEC §2)")
    p.add_argument("--x1", required=True, help=".npy (or .npz field x) of inputs")
    p.add_argument("--x2", help="second inputs (default: x1)")
    p.add_argument("--get", default="nngp,ntk", help="comma-separated: nngp, ntk")
    p.add_argument("--dtype", default="float64", type=dtype_name)
    p.add_argument("--method", default="analytic", choices=("analytic", "monte_carlo"))
    p.add_argument("--samples", type=int, default=16, help="networks averaged by monte_carlo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default $NTK_DEVICE or auto)")
    p.add_argument("--out", required=True, help="output .npz (fields nngp, ntk[, *_stderr])")
    add_remote_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    spec = read_spec(args.arch)
    x1 = read_array(args.x1)
    x2 = None if args.x2 is None else read_array(args.x2)
    get = tuple(g.strip() for g in args.get.split(",") if g.strip())
    if args.url:
        from ntk_client import Client

        with Client(args.url, api_key=args.api_key) as client:
            result = client.kernels(spec, x1, x2=x2, get=get, dtype=args.dtype, method=args.method,
                                    samples=args.samples if args.method == "monte_carlo" else None,
                                    seed=args.seed if args.method == "monte_carlo" else None)
    else:
        result = compute_locally(spec, x1, x2, get, args)
    write_npz(args.out, result)
    return 0


def compute_locally(spec, x1, x2, get, args) -> dict:
    import torch

    from workers.engine import kernel_fn

    dtype = getattr(torch, args.dtype)
    if args.method == "monte_carlo":
        from workers.engine.monte_carlo import monte_carlo_kernel_fn

        out = monte_carlo_kernel_fn(spec, x1, x2, get=get, samples=args.samples, seed=args.seed,
                                    dtype=dtype, device=args.device)
    else:
        out = kernel_fn(spec, x1, x2, get=get, dtype=dtype, device=args.device)
    return {k: v.cpu().numpy() for k, v in out.items()}
