"""What one request may ask for (NTK_MAX_*), checked before any work is queued.

Each refusal is a 422 naming the JSON path, the value, the limit and the environment variable
that sets it, also as the problem's ``value``, ``limit`` and ``setting`` members. The body's size
is refused before it is read, as a 413 (ntk.api.middleware.BodyLimit). The architecture's depth is
NTK_MAX_LAYERS (a list longer than ntk.spec.architecture.LAYERS_CEILING, which bounds the setting, is
refused while parsing: ntk.api.problems); Residual nesting is the engine's own limit
(ntk.spec.architecture), refused as a 422 that names it.
"""

from __future__ import annotations

from math import prod

from ntk.api.problems import Problem
from ntk.api.schemas import KernelRequest, PredictRequest
from ntk.core.estimate import Capacity, Estimate
from ntk.core.settings import Settings
from ntk.spec.architecture import Architecture, Residual


def within(settings: Settings, field: str, value: int | float, path: str, what: str,
           limit: int | float | None = None, **members) -> None:
    """Refuse ``value`` over the setting ``field`` (or over ``limit``, where the setting's value is
    not what counts, e.g. 0 meaning "as the workers report"); ``members`` join the problem."""
    limit = getattr(settings, field) if limit is None else limit
    if value > limit:
        setting = Settings.env(field)
        message = f"{what} is {value}, over the limit of {limit} ({setting})"
        raise Problem(422, "Over a limit", f"{path}: {message}", errors=[{"path": path, "message": message}],
                      value=value, limit=limit, setting=setting, **members)


def dimensions(shape: list[int]) -> str:
    return " × ".join(map(str, shape))


def check_point_counts(settings: Settings, shape: list[int], path: str, what: str = "the number of points") -> None:
    """An array of points, as one request or one dataset holds them."""
    within(settings, "max_points", shape[0], path, what)
    within(settings, "max_features", prod(shape[1:]), path, f"the numbers in one point ({dimensions(shape[1:])})")


def check_pair_covariances(settings: Settings, architecture: Architecture, shape: list[int], path: str) -> None:
    """What one pair of points costs the analytic kernel (ntk.core.settings: max_pair_covariances)."""
    positions = prod(shape[1:-1])
    if architecture.needs_full_spatial():
        within(settings, "max_pair_covariances", positions**2, path, f"the covariances per pair of points "
               f"({positions}² for {dimensions(shape[1:-1])} positions, all pairs of them with pooling)")
    else:
        within(settings, "max_pair_covariances", positions, path,
               f"the covariances per pair of points (one per position: {dimensions(shape[1:-1])})")


def check_depth(settings: Settings, architecture: Architecture) -> None:
    """NTK_MAX_LAYERS: the first list of layers longer than it, by its own path, then the count of all."""
    for path, layers in layer_lists(architecture.layers, "architecture.layers"):
        within(settings, "max_layers", len(layers), path, "the number of layers")
    within(settings, "max_layers", architecture.depth(), "architecture.layers",
           "the number of layers (those inside Residual blocks included)")


def layer_lists(layers: list, path: str):
    """(path, list) of ``layers`` and of every Residual branch and shortcut in it, in document order."""
    yield path, layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Residual):
            yield from layer_lists(layer.layers, f"{path}[{i}].layers")
            yield from layer_lists(layer.shortcut or [], f"{path}[{i}].shortcut")


def check_kernels(settings: Settings, body: KernelRequest, x1: dict, x2: dict | None, samples: int | None) -> None:
    """x1 and x2 are resolved references (ntk.api.inputs): their ``shape`` is known; the architecture
    is known to run on points of that shape (ntk.api.inputs.fits)."""
    n1 = x1["shape"][0]
    n2 = n1 if x2 is None else x2["shape"][0]
    check_point_counts(settings, [n1 + (0 if x2 is None else n2), *x1["shape"][1:]], "x1", "the points in x1 and x2")
    within(settings, "max_kernel_entries", n1 * n2, "x1" if x2 is None else "x2", f"the kernel's entries ({n1} × {n2})")
    if body.method == "monte_carlo":
        network = body.architecture.walk(tuple(x1["shape"][1:]))  # the finite network's affine layers
        width = max((out for _, _, out, _, _ in network.affine), default=1)
        within(settings, "max_mc_samples_width", samples * width, "samples",
               f"samples × the widest layer ({samples} × {width})")
        parameters = network.parameters
        within(settings, "max_mc_parameters", parameters, "architecture",
               "the parameters of one sampled network (fan-in × fan-out per Dense or Conv layer, and biases)")
        within(settings, "max_mc_sampled_parameters", samples * parameters, "samples",
               f"samples × the parameters of one network ({samples} × {parameters})")
    else:
        check_pair_covariances(settings, body.architecture, x1["shape"], "x1")


def check_predict(settings: Settings, body: PredictRequest, x_train: dict, x_test: dict) -> None:
    n_train, n_test = x_train["shape"][0], x_test["shape"][0]
    check_point_counts(settings, [n_train + n_test, *x_train["shape"][1:]], "x_train", "the points in x_train and x_test")
    within(settings, "max_train_points", n_train, "x_train", "the number of training points")
    times = len(body.t) if isinstance(body.t, list) else 1
    within(settings, "max_times", times, "t", "the number of times")
    within(settings, "max_kernel_entries", n_test * n_train, "x_test",
           f"the test × train kernel's entries ({n_test} × {n_train})")
    if body.compute_cov:
        within(settings, "max_kernel_entries", times * n_test**2, "x_test",
               f"the covariances' entries ({times} times × {n_test} × {n_test})")
    check_pair_covariances(settings, body.architecture, x_train["shape"], "x_train")


def duration(seconds: float) -> str:
    for unit, length in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * length:
            return f"{seconds / length:.1f} {unit}"
    return f"{seconds:.1f} s"


def check_estimate(settings: Settings, estimate: Estimate, capacity: Capacity, path: str) -> None:
    """The job's estimated time on one worker (NTK_MAX_JOB_SECONDS) and one tile's memory (what a
    worker has: ntk.core.estimate.Capacity), after the cheap per-dimension limits above."""
    spu = capacity.seconds_per_unit
    source = "the fastest live worker's calibration" if capacity.calibrated else "NTK_DEFAULT_SECONDS_PER_UNIT, " \
        "no worker having calibrated yet"
    within(settings, "max_job_seconds", round(estimate.estimate_s, 1), path,
           f"the job's estimated time on one worker in seconds ({duration(estimate.estimate_s)}: "
           f"{estimate.cost.units:.3g} units of work × {spu * 1e9:.3g} ns per unit, by {source})",
           estimate_s=estimate.estimate_s)
    within(settings, "worker_memory_bytes", estimate.cost.peak_bytes_per_tile, path,
           f"the memory one tile of {estimate.tile} points a side needs in bytes", limit=capacity.memory_bytes,
           estimate_s=estimate.estimate_s)


def check_sweep(settings: Settings, architectures: list[Architecture], x_train: dict, x_val: dict | None) -> None:
    """A sweep's data, as a prediction's: every architecture factorizes the train × train kernel,
    and predicts on the validation points from the val × train kernel. (How many architectures,
    and their depth, are checked as the sweep is expanded: ntk.api.routers.sweeps.)"""
    n_train, n_val = x_train["shape"][0], 0 if x_val is None else x_val["shape"][0]
    check_point_counts(settings, [n_train + n_val, *x_train["shape"][1:]], "x_train",
                       "the points in x_train and x_val")
    within(settings, "max_train_points", n_train, "x_train", "the number of training points")
    within(settings, "max_kernel_entries", n_val * n_train, "x_val",
           f"the validation × train kernel's entries ({n_val} × {n_train})")
    for arch in {arch.needs_full_spatial(): arch for arch in architectures}.values():  # one of each kind
        check_pair_covariances(settings, arch, x_train["shape"], "x_train")
