"""Python SDK for the NTK service: NNGP/NTK kernels and infinite-width predictions over HTTP.

>>> from ntk_client import Client, stax
>>> arch = stax.serial(stax.Dense(512, w_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1))
>>> with Client("http://localhost:8000") as c:
...     k = c.kernels(arch, x1)                      # {"nngp": ndarray, "ntk": ndarray}
...     rows = c.sweep(x, y, base=stax.stack(stax.serial(stax.Dense(512), stax.Relu()), stax.Dense(1)),
...                    grid={"depth": [1, 2, 3], "w_std": [1.0, 1.5]})   # one dict per architecture
"""

from . import stax
from ._arrays import dataset_id
from ._client import AsyncClient, Client, __version__
from ._exceptions import (
    AuthError, JobCancelled, JobFailed, NetworkError, NotFound, NTKError, RateLimited, ServerError,
    ValidationError,
)
from ._models import Job, Kernels, Prediction, Progress
from ._plot import plot_sweep

__all__ = [
    "Client", "AsyncClient", "stax", "dataset_id", "plot_sweep",
    "Kernels", "Prediction", "Job", "Progress",
    "NTKError", "ValidationError", "AuthError", "NotFound", "RateLimited", "ServerError",
    "NetworkError", "JobFailed", "JobCancelled",
    "__version__",
]
