"""Hostile input: every request below is wrong on purpose, and each must be refused with the right
4xx status and an RFC 9457 problem that names what is wrong (a JSON path among ``errors``, or words
of the ``detail``), never a 500, a hang, or NaN in an answer. Afterwards the service must still be
ready and still answer a valid request correctly.

The cases run against the live session service (tile 64, NTK_MAX_BODY_BYTES 8 MiB); the auth
cases against one of their own that has keys.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from service_helpers import MLP, assert_problem, npz, points
from ntk.engine import kernel_fn

X = [[0.1, 0.2, 0.3], [0.4, -0.5, 0.6]]
SEQUENCES = np.zeros((2, 5, 2)).tolist()  # (N, L, C)
IMAGES = np.zeros((2, 4, 4, 1)).tolist()  # (N, H, W, C)
DENSE = {"type": "Dense", "out_dim": 8}
OUT = {"type": "Dense", "out_dim": 1}
UNKNOWN_ID = "f" * 64
BODY_LIMIT = 8 << 20  # the session service's NTK_MAX_BODY_BYTES
OMIT = object()  # a field left out of a request


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    content: bytes = b""
    content_type: str | None = "application/json"
    headers: dict = field(default_factory=dict)

    def send(self, client: httpx.Client) -> httpx.Response:
        headers = {**({"Content-Type": self.content_type} if self.content_type else {}), **self.headers}
        return client.request(self.method, self.url, content=self.content, headers=headers)


def encode(document) -> bytes:
    """JSON as a careless client writes it: Python's NaN and Infinity literals allowed."""
    return json.dumps(document).encode()


def request(url: str, base: dict, changes: dict) -> Call:
    document = {**base, **changes}
    return Call("POST", url, encode({k: v for k, v in document.items() if v is not OMIT}))


def kernels(query: str = "", **changes) -> Call:
    return request(f"/v1/kernels{query}", {"architecture": MLP, "x1": X}, changes)


def predict(**changes) -> Call:
    return request("/v1/predict", {"architecture": MLP, "x_train": X, "y_train": [[1.0], [0.0]], "x_test": X[:1]},
                   changes)


def net(*layers) -> dict:
    return {"layers": list(layers)}


def network(*layers, x1=X) -> Call:
    return kernels(architecture=net(*layers), x1=x1)


def dataset(document) -> Call:
    return Call("POST", "/v1/datasets", encode(document))


def upload(content: bytes, content_type: str = "application/x-npy") -> Call:
    return Call("POST", "/v1/datasets", content, content_type)


def raw(url: str, content: bytes, content_type: str | None = "application/json") -> Call:
    return Call("POST", url, content, content_type)


def get(url: str) -> Call:
    return Call("GET", url, content_type=None)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_header(shape, descr: str = "<f8") -> bytes:
    """Just an npy header: what it declares need not be what follows."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def deflated(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return buffer.getvalue()


def corrupted_npz() -> bytes:
    """An npz whose x data no longer matches its CRC."""
    data = bytearray(npz(x=np.ones((4, 3))))
    start = data.index(b"\x00\x00\xf0\x3f")  # the first 1.0 of x
    data[start + 3] ^= 0xFF
    return bytes(data)


def residuals(depth: int) -> dict:
    layer = DENSE
    for _ in range(depth):
        layer = {"type": "Residual", "layers": [layer]}
    return layer


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


NAN, INF = math.nan, math.inf
MLP_JSON = json.dumps(MLP)
OVERFLOWING = net(*[{"type": "Dense", "out_dim": 8, "w_std": 1000.0, "b_std": 1000.0}] * 60, OUT)


NON_FINITE = [
    pytest.param(kernels(x1=[[NAN, 0.0, 1.0]]), 422, "x1", id="x1 NaN literal"),
    pytest.param(kernels(x1=[[INF, 0.0, 1.0]]), 422, "x1", id="x1 Infinity literal"),
    pytest.param(kernels(x1=[[-INF, 0.0, 1.0]]), 422, "x1", id="x1 -Infinity literal"),
    pytest.param(raw("/v1/kernels", f'{{"architecture": {MLP_JSON}, "x1": [[1e999, 0, 1]]}}'.encode()), 422, "x1",
                 id="x1 1e999 overflows to infinity"),
    pytest.param(kernels(x2=[[0.0, NAN, 1.0]]), 422, "x2", id="x2 NaN"),
    pytest.param(predict(y_train=[[NAN], [0.0]]), 422, "y_train", id="y_train NaN"),
    pytest.param(predict(x_test=[[0.0, -INF, 1.0]]), 422, "x_test", id="x_test -Infinity"),
    pytest.param(dataset({"x": [[NAN, 1.0]]}), 422, "x", id="dataset x NaN"),
    pytest.param(dataset({"x": [[1.0], [2.0]], "y": [INF, 1.0]}), 422, "y", id="dataset y Infinity"),
    pytest.param(network({**DENSE, "w_std": NAN}, OUT), 422, "architecture.layers[0].w_std", id="w_std NaN"),
    pytest.param(network({**DENSE, "b_std": INF}, OUT), 422, "architecture.layers[0].b_std", id="b_std Infinity"),
    pytest.param(network(DENSE, {"type": "Erf", "a": -INF}, OUT), 422, "architecture.layers[1].a", id="Erf a -Infinity"),
    pytest.param(predict(t=NAN), 422, "t", id="t NaN"),
    pytest.param(predict(t=INF), 422, "t", id="t Infinity (null is the infinite time)"),
    pytest.param(predict(t=[1.0, NAN]), 422, "t[1]", id="t list holding NaN"),
    pytest.param(predict(diag_reg=NAN), 422, "diag_reg", id="diag_reg NaN"),
    pytest.param(predict(learning_rate=INF), 422, "learning_rate", id="learning_rate Infinity"),
    pytest.param(kernels("?wait=nan"), 422, "wait", id="wait=nan"),
    pytest.param(kernels("?wait=inf"), 422, "wait", id="wait=inf"),
]

NON_FINITE_BINARY = [
    pytest.param(upload(npy(np.array([[1.0, NAN]]))), 422, "x", id="npy NaN"),
    pytest.param(upload(npy(np.array([[1.0, INF]], dtype=np.float32))), 422, "x", id="npy float32 infinity"),
    pytest.param(upload(npy(np.array([[-INF, 1.0]], dtype=np.float16))), 422, "x", id="npy float16 -infinity"),
    pytest.param(upload(npz(x=np.ones((2, 2)), y=np.array([NAN, 1.0])), "application/x-npz"), 422, "y",
                 id="npz y NaN"),
]

OVERFLOW = [
    pytest.param(kernels(architecture=OVERFLOWING), 422, "overflow", id="w_std 1e3 over 60 layers, float64"),
    pytest.param(predict(architecture=OVERFLOWING), 422, "overflow", id="overflowing kernel in a prediction"),
    pytest.param(kernels(architecture=net(*[{"type": "Dense", "out_dim": 8, "w_std": 1000.0}] * 7, OUT),
                         dtype="float32"), 422, "overflow", id="w_std 1e3 over 7 layers, float32"),
    pytest.param(kernels(x1=[[1e300, 1e300, 1e300]]), 422, "overflow", id="finite inputs whose kernel overflows"),
    pytest.param(kernels(architecture=OVERFLOWING, method="monte_carlo", samples=2), 422, "overflow",
                 id="Monte Carlo network overflows"),
    pytest.param(network({**DENSE, "w_std": 1e4}, OUT), 422, "architecture.layers[0].w_std", id="w_std over its bound"),
]

RAGGED = [
    pytest.param(kernels(x1=[[1.0, 2.0, 3.0], [4.0]]), 422, "x1", id="x1 rows of different lengths"),
    pytest.param(kernels(x1=[[1.0, [2.0], 3.0], [4.0, 5.0, 6.0]]), 422, "x1", id="x1 list among numbers"),
    pytest.param(kernels(x1=[[[1.0], [2.0]], [[3.0]]]), 422, "x1", id="x1 ragged third axis"),
    pytest.param(predict(y_train=[[1.0], [0.0, 2.0]]), 422, "y_train", id="y_train ragged"),
    pytest.param(dataset({"x": [[1.0, 2.0], []]}), 422, "x", id="dataset x with an empty row"),
]

WRONG_TYPES = [
    pytest.param(kernels(x1=[["0.1", "0.2", "0.3"]]), 422, "x1", id="x1 strings"),
    pytest.param(kernels(x1=[[1.0, True, 0.0]]), 422, "x1", id="x1 boolean among numbers"),
    pytest.param(kernels(x1=[[True, False, True]]), 422, "x1", id="x1 booleans"),
    pytest.param(kernels(x1=[[None, 1.0, 2.0]]), 422, "x1", id="x1 null entry"),
    pytest.param(kernels(x1=[[{"re": 1}, 1.0, 2.0]]), 422, "x1", id="x1 object entry"),
    pytest.param(kernels(x1=[[10**400, 1, 2]]), 422, "x1", id="x1 integer beyond float64"),
    pytest.param(kernels(x1="0.1, 0.2"), 422, "x1", id="x1 a string"),
    pytest.param(kernels(x1=5), 422, "x1", id="x1 a number"),
    pytest.param(upload(npy(np.ones((2, 2), dtype=complex))), 422, "x", id="npy complex"),
    pytest.param(upload(npy(np.array([[1, None]], dtype=object), allow_pickle=True)), 422, "x",
                 id="npy object dtype (pickled)"),
    pytest.param(upload(npy(np.ones((2, 2), dtype=bool))), 422, "x", id="npy booleans"),
    pytest.param(upload(npy(np.array([["a", "b"]]))), 422, "x", id="npy strings"),
    pytest.param(upload(npy(np.zeros((2,), dtype=[("a", "f8"), ("b", "f8")]))), 422, "x", id="npy structured"),
    pytest.param(upload(npy(np.array([["2020-01-01"]], dtype="datetime64[D]"))), 422, "x", id="npy datetimes"),
    pytest.param(network({**DENSE, "w_std": "1.5"}, OUT), 422, "architecture.layers[0].w_std", id="w_std a string"),
    pytest.param(network({**DENSE, "out_dim": True}, OUT), 422, "architecture.layers[0].out_dim", id="out_dim true"),
    pytest.param(network({**DENSE, "out_dim": 8.5}, OUT), 422, "architecture.layers[0].out_dim", id="out_dim 8.5"),
    pytest.param(predict(t=True), 422, "t", id="t true"),
    pytest.param(predict(diag_reg="0.1"), 422, "diag_reg", id="diag_reg a string"),
    pytest.param(predict(compute_cov="yes"), 422, "compute_cov", id="compute_cov a string"),
    pytest.param(kernels(get="ntk"), 422, "get", id="get a string, not a list"),
    pytest.param(kernels(architecture=[DENSE, OUT]), 422, "architecture", id="architecture a list"),
]

SHAPES = [
    pytest.param(kernels(x1=[0.1, 0.2, 0.3]), 422, "x1", id="x1 1-D"),
    pytest.param(kernels(x1=[[[[[0.1]]]]]), 422, "x1", id="x1 5-D"),
    pytest.param(kernels(x1=[]), 422, "x1", id="x1 no points"),
    pytest.param(kernels(x1=[[]]), 422, "x1", id="x1 points with no features"),
    pytest.param(kernels(x2=[[0.1, 0.2]]), 422, "x2", id="x2 features unlike x1's"),
    pytest.param(kernels(x2=[]), 422, "x2", id="x2 no points"),
    pytest.param(predict(x_test=[[0.1, 0.2]]), 422, "x_test", id="x_test features unlike x_train's"),
    pytest.param(predict(y_train=[[1.0], [0.0], [2.0]]), 422, "y_train", id="y_train longer than x_train"),
    pytest.param(predict(y_train=[[[1.0]], [[0.0]]]), 422, "y_train", id="y_train 3-D"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2]}, OUT), 422, "architecture.layers[0]",
                 id="Conv on (N, d) points"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2, 2]}, {"type": "Flatten"}, OUT,
                         x1=SEQUENCES), 422, "architecture.layers[0].filter_shape", id="2-D filter on 1-D inputs"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [7]}, {"type": "Flatten"}, OUT,
                         x1=SEQUENCES), 422, "architecture.layers[0].filter_shape", id="filter longer than input"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2], "strides": [1, 1]}, {"type": "Flatten"},
                         OUT, x1=SEQUENCES), 422, "architecture.layers[0].strides", id="strides unlike filter"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2, 2]}, {"type": "AvgPool", "window_shape": [5, 5]},
                         {"type": "Flatten"}, OUT, x1=IMAGES), 422, "architecture.layers[1].window_shape",
                 id="pool window larger than input"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2, 2]}, OUT, x1=IMAGES), 422,
                 "architecture.layers", id="spatial axes left at the output"),
    pytest.param(network(DENSE, {"type": "GlobalAvgPool"}, OUT), 422, "architecture.layers[1]",
                 id="GlobalAvgPool on (N, d) points"),
    pytest.param(upload(npy(np.arange(5.0))), 422, "x", id="npy 1-D"),
    pytest.param(upload(npy(np.zeros((0, 3)))), 422, "x", id="npy no points"),
    pytest.param(upload(npz(x=np.ones((3, 2)), y=np.ones(4)), "application/x-npz"), 422, "y",
                 id="npz y unlike x in length"),
    pytest.param(dataset({"x": 5}), 422, "x", id="dataset x a number"),
]

IDS = [
    pytest.param(kernels(x1={"dataset": UNKNOWN_ID}), 422, "x1.dataset", id="unknown dataset id"),
    pytest.param(kernels(x1={"dataset": "../../etc/passwd"}), 422, "x1.dataset", id="path-like dataset id"),
    pytest.param(kernels(x1={"dataset": UNKNOWN_ID.upper()}), 422, "x1.dataset", id="uppercase hex id"),
    pytest.param(kernels(x1={"dataset": ""}), 422, "x1.dataset", id="empty dataset id"),
    pytest.param(kernels(x1={"dataset": 12345}), 422, "x1.dataset", id="numeric dataset id"),
    pytest.param(predict(y_train={"dataset": UNKNOWN_ID, "field": "z"}), 422, "y_train.field", id="unknown field"),
    pytest.param(kernels(x1={"dataset": UNKNOWN_ID, "path": "/etc"}), 422, "x1.path", id="extra key in a reference"),
    pytest.param(get("/v1/datasets/%2e%2e%2f%2e%2e%2fetc%2fpasswd"), 404, "no resource", id="GET %2e%2e%2f dataset"),
    pytest.param(get("/v1/datasets/..%2F..%2Fetc%2Fpasswd"), 404, "no resource", id="GET ..%2F dataset"),
    pytest.param(get("/v1/jobs/%2e%2e"), 404, "no job", id="GET job %2e%2e"),
    pytest.param(get("/v1/datasets/" + "a" * 4000), 404, "no dataset", id="GET 4000-character dataset id"),
    pytest.param(get("/v1/jobs/" + "b" * 4000), 404, "no job", id="GET 4000-character job id"),
    pytest.param(get("/v1/jobs/%C3%A9t%C3%A9%E2%98%83"), 404, "no job", id="GET unicode job id"),
    pytest.param(get("/v1/jobs/a%00b/result"), 404, "no job", id="GET job id with a NUL byte"),
    pytest.param(Call("DELETE", f"/v1/datasets/{UNKNOWN_ID}", content_type=None), 404, "no dataset",
                 id="DELETE unknown dataset"),
    pytest.param(Call("DELETE", "/v1/jobs/*", content_type=None), 404, "no job", id="DELETE job glob"),
]

MALFORMED_BINARY = [
    pytest.param(upload(npy(np.ones((4, 3)))[:-5]), 400, "fewer", id="npy truncated"),
    pytest.param(upload(npy(np.ones((4, 3))) + b"\0" * 8), 400, "more", id="npy trailing bytes"),
    pytest.param(upload(b"\x93NUMPX" + npy(np.ones((4, 3)))[6:]), 400, "magic", id="npy wrong magic"),
    pytest.param(upload(b""), 400, "npy", id="npy empty body"),
    pytest.param(upload(b"\x93NUMPY\x01\x00\x10\x00{'descr': 'junk\n"), 400, "npy", id="npy header junk"),
    pytest.param(upload(npy_header((10**6, 10**6)) + b"\0" * 64), 413, "header declares", id="npy declares 8 TB"),
    pytest.param(upload(npy_header((-2, -3)) + b"\0" * 48), 400, "negative", id="npy negative shape"),
    pytest.param(upload(npz(x=np.ones((4, 3)))), 400, "npy", id="npz body sent as npy"),
    pytest.param(upload(npy(np.ones((4, 3))), "application/x-npz"), 400, "zip", id="npy body sent as npz"),
    pytest.param(upload(b"PK\x03\x04garbage", "application/x-npz"), 400, "npz", id="npz garbage"),
    pytest.param(upload(npz(x=np.ones((4, 3)))[:-30], "application/x-npz"), 400, "npz", id="npz truncated"),
    pytest.param(upload(corrupted_npz(), "application/x-npz"), 400, "CRC", id="npz bad CRC"),
    pytest.param(upload(deflated(x=npy_header((50_000, 20_000)) + bytes(1 << 20)), "application/x-npz"), 413,
                 "header declares", id="zip bomb: 8 GB declared, refused before allocating"),
    pytest.param(upload(deflated(x=npy_header((2, 3)) + bytes(16 << 20)), "application/x-npz"), 400, "more",
                 id="zip bomb: small header, 16 MB inflating behind it"),
    pytest.param(upload(npz(z=np.ones((4, 3))), "application/x-npz"), 422, "z", id="npz array other than x, y"),
    pytest.param(upload(npz(y=np.ones(4)), "application/x-npz"), 422, "x", id="npz without x"),
    # a zero dimension makes the declared size 0, whatever the other dimensions claim
    pytest.param(upload(npy_header((2**63, 0))), 422, "axis 0", id="npy shape (2^63, 0)"),
    pytest.param(upload(npy_header((0, 2**70))), 422, "axis 1", id="npy shape (0, 2^70)"),
    pytest.param(upload(npy_header((2**40, 2**40, 0))), 422, "axis 0", id="npy shape (2^40, 2^40, 0)"),
    pytest.param(upload(deflated(x=npy_header((0, 2**70))), "application/x-npz"), 422, "axis 1",
                 id="npz member of shape (0, 2^70)"),
]

NESTING = [
    pytest.param(network(DENSE, residuals(50), OUT), 422, "nest", id="Residual 50 deep"),
    pytest.param(network(*[DENSE] * 10_000, OUT), 422, "architecture.layers", id="10k layers"),
    pytest.param(network(*[{"type": "Residual", "layers": [DENSE] * 600}] * 2, OUT), 422, "NTK_MAX_LAYERS",
                 id="1203 layers, most inside Residual branches"),
    pytest.param(raw("/v1/kernels", nested(10_000)), 400, "deeply", id="10^4 brackets to /v1/kernels"),
    pytest.param(raw("/v1/datasets", b'{"x": ' + nested(10_000) + b"}"), 400, "deeply",
                 id="10^4 brackets to /v1/datasets"),
    pytest.param(raw("/v1/kernels", f'{{"architecture": {MLP_JSON}, "x1": {"[" * 70}1{"]" * 70}}}'.encode()), 422,
                 "x1", id="x1 nested 70 deep"),
]

LAYERS = [
    pytest.param(network({"type": "Softmax"}, OUT), 422, "architecture.layers[0]", id="unknown layer type"),
    pytest.param(network({"out_dim": 8}, OUT), 422, "architecture.layers[0]", id="layer without a type"),
    pytest.param(network({**DENSE, "colour": "red"}, OUT), 422, "architecture.layers[0].colour", id="unknown parameter"),
    pytest.param(network({**DENSE, "out_dim": 0}, OUT), 422, "architecture.layers[0].out_dim", id="zero width"),
    pytest.param(network({**DENSE, "out_dim": -5}, OUT), 422, "architecture.layers[0].out_dim", id="negative width"),
    pytest.param(network({**DENSE, "out_dim": 2**64}, OUT), 422, "architecture.layers[0].out_dim", id="width 2^64"),
    pytest.param(network({"type": "Conv", "out_chan": 0, "filter_shape": [2]}, {"type": "Flatten"}, OUT, x1=SEQUENCES),
                 422, "architecture.layers[0].out_chan", id="zero channels"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [0]}, {"type": "Flatten"}, OUT, x1=SEQUENCES),
                 422, "architecture.layers[0].filter_shape[0]", id="zero filter"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2], "strides": [0]}, {"type": "Flatten"}, OUT,
                         x1=SEQUENCES), 422, "architecture.layers[0].strides[0]", id="zero stride"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2], "padding": "same"}, {"type": "Flatten"},
                         OUT, x1=SEQUENCES), 422, "architecture.layers[0].padding", id="padding in lowercase"),
    pytest.param(network({"type": "Conv", "out_chan": 4, "filter_shape": [2], "padding": "REFLECT"}, {"type": "Flatten"},
                         OUT, x1=SEQUENCES), 422, "architecture.layers[0].padding", id="unknown padding"),
    pytest.param(network({**DENSE, "w_std": -1.0}, OUT), 422, "architecture.layers[0].w_std", id="negative w_std"),
    pytest.param(network({"type": "Relu"}, OUT), 422, "architecture.layers[0]", id="activation on the input"),
    pytest.param(network(DENSE, {"type": "Relu"}, {"type": "Erf"}, OUT), 422, "architecture.layers[2]",
                 id="activation on an activation"),
    pytest.param(network(), 422, "architecture.layers", id="no layers"),
    pytest.param(kernels(architecture={**MLP, "parameterization": "mup"}), 422, "architecture.parameterization",
                 id="unknown parameterization"),
    pytest.param(network(DENSE, {"type": "Elementwise", "fn": "softmax"}, OUT), 422, "architecture.layers[1].fn",
                 id="unknown elementwise function"),
    pytest.param(network(DENSE, {"type": "LayerNorm", "axis": [0]}, OUT), 422, "architecture.layers[1].axis",
                 id="LayerNorm over the batch axis"),
    pytest.param(network(DENSE, {"type": "LayerNorm", "axis": [9]}, OUT), 422, "architecture.layers[1].axis[0]",
                 id="LayerNorm axis out of range"),
    pytest.param(kernels(architecture=OMIT), 422, "architecture", id="no architecture"),
]

PREDICT_PARAMETERS = [
    pytest.param(predict(t=-1.0), 422, "t", id="t negative"),
    pytest.param(predict(t=[1.0, -2.0]), 422, "t[1]", id="t list holding a negative"),
    pytest.param(predict(t="soon"), 422, "t", id="t a string"),
    pytest.param(predict(t=[]), 422, "t", id="t an empty list"),
    pytest.param(predict(t=list(range(20_000))), 422, "t", id="t a list of 20000 times"),
    pytest.param(predict(diag_reg=-1e-3), 422, "diag_reg", id="diag_reg negative"),
    pytest.param(predict(learning_rate=0.0), 422, "learning_rate", id="learning_rate zero"),
    pytest.param(predict(learning_rate=-1.0), 422, "learning_rate", id="learning_rate negative"),
    pytest.param(predict(kernel="rbf"), 422, "kernel", id="unknown kernel"),
    pytest.param(predict(targets="labels"), 422, "targets", id="unknown targets"),
    pytest.param(predict(targets="one_hot", y_train=[1, 1], diag_reg=1e-3), 422, "2 classes", id="one class only"),
    pytest.param(predict(x_train=[[1.0, 2.0, 3.0]] * 2, y_train=[[1.0], [2.0]]), 422, "diag_reg",
                 id="singular train kernel at diag_reg 0"),
    pytest.param(predict(y_train=OMIT), 422, "y_train", id="no y_train"),
]

KERNEL_PARAMETERS = [
    pytest.param(kernels(get=["cntk"]), 422, "get[0]", id="unknown kernel name"),
    pytest.param(kernels(get=[]), 422, "get", id="get empty"),
    pytest.param(kernels(dtype="float16"), 422, "dtype", id="dtype float16"),
    pytest.param(kernels(method="exact"), 422, "method", id="unknown method"),
    pytest.param(kernels(method="monte_carlo", samples=1), 422, "samples", id="one sample"),
    pytest.param(kernels(method="monte_carlo", samples=-3), 422, "samples", id="negative samples"),
    pytest.param(kernels(method="monte_carlo", seed=-1), 422, "seed", id="negative seed"),
    pytest.param(kernels("?wait=-1"), 422, "wait", id="wait negative"),
    pytest.param(kernels("?wait=301"), 422, "wait", id="wait over 300"),
    pytest.param(kernels("?wait=soon"), 422, "wait", id="wait a word"),
    pytest.param(kernels(colour="red"), 422, "colour", id="unknown field"),
]

BODIES = [
    pytest.param(Call("POST", "/v1/kernels", encode({"architecture": MLP, "x1": X}), "text/plain"), 415, "text/plain",
                 id="text/plain body"),
    pytest.param(Call("POST", "/v1/kernels", encode({"architecture": MLP, "x1": X}), None), 415, "untyped",
                 id="no Content-Type"),
    pytest.param(Call("POST", "/v1/predict", b"x1=1", "application/x-www-form-urlencoded"), 415, "form-urlencoded",
                 id="form body"),
    pytest.param(raw("/v1/kernels", b""), 400, "empty", id="empty body"),
    pytest.param(raw("/v1/kernels", b'{"architecture": '), 400, "not valid JSON", id="cut-off JSON"),
    pytest.param(raw("/v1/kernels", b"{'x1': [[1]]}"), 400, "not valid JSON", id="single-quoted JSON"),
    pytest.param(raw("/v1/kernels", b'{"x1": "\xff\xfe"}'), 400, "not valid JSON", id="invalid UTF-8"),
    pytest.param(raw("/v1/kernels", b"[1, 2, 3]"), 422, "$", id="array for a body"),
    pytest.param(raw("/v1/datasets", b""), 400, "not valid JSON", id="dataset empty body"),
    pytest.param(raw("/v1/datasets", b"[[1, 2]]"), 422, "x", id="dataset body an array"),
    pytest.param(dataset({"x": None}), 422, "x", id="dataset x null"),
    pytest.param(dataset({"x": [[1.0]], "z": [1.0]}), 422, "z", id="dataset unknown field"),
    pytest.param(upload(b"1,2\n3,4", "text/csv"), 415, "text/csv", id="dataset as CSV"),
    pytest.param(raw("/v1/kernels", b" " * (BODY_LIMIT + 1)), 413, "NTK_MAX_BODY_BYTES", id="body over the limit"),
]

CASES = (NON_FINITE + NON_FINITE_BINARY + OVERFLOW + RAGGED + WRONG_TYPES + SHAPES + IDS + MALFORMED_BINARY + NESTING
         + LAYERS + PREDICT_PARAMETERS + KERNEL_PARAMETERS + BODIES)


@pytest.fixture(scope="module")
def client(service_url):
    with httpx.Client(base_url=service_url, timeout=120) as c:
        yield c


@pytest.mark.parametrize("call, status, names", CASES)
def test_refused_with_a_problem_that_names_it(client, call, status, names):
    body = assert_problem(call.send(client), status)
    paths = [error["path"] for error in body.get("errors") or []]
    assert names in paths or names.lower() in body["detail"].lower(), body


def test_still_ready_and_right_afterwards(client):
    assert client.get("/readyz").status_code == 200
    x = points(7, seed=41)
    r = client.post("/v1/kernels", json={"architecture": MLP, "x1": x.tolist()})
    assert r.status_code == 200, r.text
    reference = kernel_fn(MLP, x)
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(r.json()[name], reference[name].numpy(), rtol=1e-12, atol=0)


@pytest.fixture(scope="module")
def guarded(start_service, start_valkey):
    """A service with API keys (no workers: refusing a caller needs none)."""
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=0, api_keys="alpha") as svc:
        with httpx.Client(base_url=svc.url, timeout=30) as c:
            yield c


AUTHORIZATION_JUNK = [
    pytest.param({}, id="no header"),
    pytest.param({"Authorization": ""}, id="empty header"),
    pytest.param({"Authorization": "Bearer"}, id="scheme alone"),
    pytest.param({"Authorization": "Bearer ALPHA"}, id="key in capitals"),
    pytest.param({"Authorization": "Bearer alpha,"}, id="key and a comma"),
    pytest.param({"Authorization": "Bearer beta"}, id="wrong key"),
    pytest.param({"Authorization": "Bearer alph"}, id="prefix of the key"),
    pytest.param({"Authorization": "Bearer alphaalpha"}, id="key twice"),
    pytest.param({"Authorization": "Bearer alpha extra"}, id="key and more words"),
    pytest.param({"Authorization": "Basic alpha"}, id="Basic scheme"),
    pytest.param({"Authorization": "alpha"}, id="key without scheme"),
    pytest.param({"Authorization": "Bearer\talpha"}, id="tab for a space"),
    pytest.param({"Authorization": "Bearer " + "a" * 8000}, id="8000-character key"),
    pytest.param({"Authorization": "Bearer \xe9\xe8\xff".encode("latin-1")}, id="non-ASCII bytes"),
]


@pytest.mark.parametrize("headers", AUTHORIZATION_JUNK)
def test_authorization_junk_is_401(guarded, headers):
    r = guarded.get("/v1/jobs/0123", headers=headers)
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_the_key_itself_is_let_in(guarded):
    assert_problem(guarded.get("/v1/jobs/0123", headers={"Authorization": "Bearer alpha"}), 404)


@pytest.fixture(scope="module")
def job_id(client) -> str:
    """The id of a real job (new points: nothing cached answers it), whose Redis keys share its prefix."""
    r = client.post("/v1/kernels?wait=0", json={"architecture": MLP, "x1": points(3, seed=4200).tolist()})
    assert r.status_code == 202, r.text
    return r.json()["job"]["id"]


@pytest.mark.parametrize("suffix", [":inputs", ":done", ":result", "*", "-", "0"])
@pytest.mark.parametrize("method, tail", [("GET", ""), ("DELETE", ""), ("GET", "/result")])
def test_a_job_id_out_of_its_format_is_404_and_names_no_redis_internals(client, job_id, suffix, method, tail):
    r = client.request(method, f"/v1/jobs/{job_id}{suffix}{tail}")
    body = assert_problem(r, 404)
    assert "WRONGTYPE" not in r.text and "redis" not in r.text.lower(), body
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] != "cancelled"


def test_redis_failures_are_problems_without_redis_text():
    """What redis-py says (commands, keys, addresses) is logged, never answered."""
    import redis

    from ntk.core.problems import redis_problem

    failures = [redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
                redis.ConnectionError("Error 111 connecting to localhost:6379. Connection refused."),
                redis.TimeoutError("Timeout reading from socket"),
                redis.ReadOnlyError("You can't write against a read only replica.")]
    for failure in failures:
        body = redis_problem(failure)
        assert body["status"] == 503 and str(failure) not in body["detail"], body
        assert "6379" not in body["detail"] and "WRONGTYPE" not in body["detail"] and "socket" not in body["detail"]
    assert redis_problem(redis.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."))["status"] == 507


BIG_ENDIAN = ([[1.5, -2.0], [0.25, 3.0], [-1.0, 0.5]], [[1, -2], [3, 4], [-5, 6]], [[1, 2], [3, 4], [5, 600]])


@pytest.mark.parametrize("dtype, values", [(">f4", BIG_ENDIAN[0]), (">f2", BIG_ENDIAN[0]), (">f8", BIG_ENDIAN[0]),
                                           (">i4", BIG_ENDIAN[1]), (">i8", BIG_ENDIAN[1]), (">u2", BIG_ENDIAN[2])])
def test_big_endian_arrays_are_stored_in_native_order_and_compute(client, dtype, values):
    swapped = np.array(values, dtype=dtype)
    native = swapped.astype(swapped.dtype.newbyteorder("="))
    uploaded = client.post("/v1/datasets", content=npy(swapped), headers={"Content-Type": "application/x-npy"})
    assert uploaded.status_code in (200, 201), uploaded.text
    again = client.post("/v1/datasets", content=npy(native), headers={"Content-Type": "application/x-npy"})
    assert again.status_code == 200 and again.json()["id"] == uploaded.json()["id"]  # the same stored bytes
    r = client.post("/v1/kernels", json={"architecture": MLP, "x1": {"dataset": uploaded.json()["id"]}})
    assert r.status_code == 200, r.text
    reference = kernel_fn(MLP, native.astype(np.float64))
    np.testing.assert_allclose(r.json()["ntk"], reference["ntk"].numpy(), rtol=1e-12, atol=0)


def test_big_endian_arrays_inside_an_npz_are_stored_in_native_order(client):
    x, y = np.array(BIG_ENDIAN[0], dtype=">f8"), np.array([1, -1, 2], dtype=">i4")
    uploaded = client.post("/v1/datasets", content=npz(x=x, y=y), headers={"Content-Type": "application/x-npz"})
    assert uploaded.status_code in (200, 201), uploaded.text
    native = npz(x=x.astype("=f8"), y=y.astype("=i4"))
    again = client.post("/v1/datasets", content=native, headers={"Content-Type": "application/x-npz"})
    assert again.status_code == 200 and again.json()["id"] == uploaded.json()["id"]


@pytest.mark.parametrize("shape, axis", [((2**63, 0), 0), ((0, 2**70), 1), ((2**40, 2**40, 0), 0)])
def test_a_declared_dimension_is_checked_on_its_own(client, shape, axis):
    body = assert_problem(upload(npy_header(shape)).send(client), 422, "x")
    assert f"axis {axis}" in body["detail"] and body["value"] == shape[axis], body
    assert body["setting"] == "NTK_MAX_BODY_BYTES" and body["limit"] == BODY_LIMIT // 8


def test_monte_carlo_bounds_the_parameters_of_the_sampled_networks(client):
    """32 × 2^20 passes the samples × width limit; two 2^20-wide layers are 2^40 weights."""
    wide = net({"type": "Dense", "out_dim": 2**20}, {"type": "Relu"}, {"type": "Dense", "out_dim": 2**20},
               {"type": "Relu"}, OUT)
    r = kernels(architecture=wide, method="monte_carlo", samples=32).send(client)
    body = assert_problem(r, 422, "architecture")
    assert body["setting"] == "NTK_MAX_MC_PARAMETERS" and body["value"] == 3 * 2**20 + 2**40 + 2**20, body
    assert body["value"] > body["limit"]


@pytest.mark.parametrize("accept, npz_expected", [
    ("application/x-npz;q=0, application/json", False),
    ("application/x-npz; q=0.0, */*", False),
    ("application/json;q=0.5, application/x-npz;q=0.4", False),
    ("application/json;q=0.4, application/x-npz;q=0.5", True),
    ("application/x-npz", True),
    ("*/*", False),
    ("application/*", False),
    ("text/html", False),
])
def test_accept_honours_q_values(client, accept, npz_expected):
    r = client.post("/v1/kernels", json={"architecture": MLP, "x1": X}, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-npz" if npz_expected else "application/json")


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_probes_answer_without_a_body(client, path):
    r = client.head(path)
    assert r.status_code == 200 and r.content == b""


def test_targets_whose_prediction_overflows_are_named_not_diag_reg(client):
    body = assert_problem(predict(y_train=[[1e308], [-1e308]], x_test=[[1.0, 1.0, 1.0]]).send(client), 422)
    assert "y_train" in body["detail"] and "diag_reg" not in body["detail"], body
    fits = predict(y_train=[[1e308], [-1e308]]).send(client)  # at a training point the mean is its target
    assert fits.status_code == 200, fits.text
    np.testing.assert_allclose(fits.json()["mean"], [[1e308]], rtol=1e-6)


@pytest.mark.parametrize("call, path, known", [
    (network({**DENSE, "W_std": 1.5}, OUT), "architecture.layers[0].W_std", "w_std"),
    (network(DENSE, {"type": "Residual", "layers": [{**DENSE, "B_std": 0.1}]}, OUT),
     "architecture.layers[1].layers[0].B_std", "b_std"),
    (network({"type": "Dense", "outDim": 8}, OUT), "architecture.layers[0].outDim", "out_dim"),
    (kernels(architecture={**MLP, "Parameterization": "ntk"}), "architecture.Parameterization", "parameterization"),
    (kernels(x1=OMIT, X1=X), "X1", "x1"),
    (predict(diagReg=1e-3), "diagReg", "diag_reg"),
    (kernels(x1={"dataset": UNKNOWN_ID, "Field": "x"}), "x1.Field", "field"),
])
def test_a_known_parameter_in_another_spelling_is_suggested(client, call, path, known):
    body = assert_problem(call.send(client), 422, path)
    error = next(e for e in body["errors"] if e["path"] == path)
    assert error["suggestion"] == known and known in body["detail"], body


def test_no_redirect_before_auth(guarded):
    """No route redirects (redirect_slashes is off), and an unknown /v1 path or method asks for a key first."""
    for method, path in [("POST", "/v1/kernels/"), ("GET", "/v1/datasets/"), ("GET", "/v1/nothing"),
                         ("PUT", "/v1/kernels")]:
        r = guarded.request(method, path, json={})
        assert_problem(r, 401)
        assert "location" not in r.headers
    keyed = guarded.post("/v1/kernels/", json={}, headers={"Authorization": "Bearer alpha"})
    assert_problem(keyed, 404)
    assert "location" not in keyed.headers


def test_openapi_declares_bearer_security(guarded):
    document = guarded.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["bearer"]["description"]}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert (operation.get("security") == [{"bearer": []}]) == path.startswith("/v1/"), (path, operation)


def test_openapi_without_keys_declares_no_security(client):
    document = client.get("/openapi.json").json()
    assert "bearer" in document["components"]["securitySchemes"]
    assert not any("security" in op for operations in document["paths"].values() for op in operations.values())


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_nothing_from_another_host(client, page):
    r = client.get(page)
    assert r.status_code == 200
    html = r.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html, html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset
