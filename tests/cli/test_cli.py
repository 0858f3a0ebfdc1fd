"""``ntk``: kernel and predict write what the engine (or the service) computes; every user error is
one line on stderr and a non-zero exit, never a traceback."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ntk.cli.main import build_parser, main
from ntk.engine import kernel_fn
from ntk.engine.monte_carlo import monte_carlo_kernel_fn
from ntk.engine.predict import class_targets, predict_from_spec
from ntk.spec.limits import DEFAULT_SAMPLES

ROOT = Path(__file__).resolve().parents[2]

SPEC = {"layers": [{"type": "Dense", "out_dim": 64, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                   {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}]}


def write_inputs(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "arch.json").write_text(json.dumps(SPEC))
    x, x_test = rng.normal(size=(12, 3)), rng.normal(size=(4, 3))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x_test.npy", x_test)
    np.savez(tmp_path / "train.npz", x=x, y=rng.normal(size=(12, 2)))
    return x, x_test


def test_kernel_command_writes_the_engine_kernels(tmp_path):
    x, x_test = write_inputs(tmp_path)
    out = tmp_path / "k.npz"
    assert main(["kernel", "--arch", str(tmp_path / "arch.json"), "--x1", str(tmp_path / "x.npy"),
                 "--x2", str(tmp_path / "x_test.npy"), "--out", str(out)]) == 0
    saved = np.load(out)
    expected = kernel_fn(SPEC, x, x_test)
    for name in ("nngp", "ntk"):
        np.testing.assert_array_equal(saved[name], expected[name].numpy())


def test_kernel_command_get_and_float32(tmp_path):
    write_inputs(tmp_path)
    out = tmp_path / "k.npz"
    assert main(["kernel", "--arch", str(tmp_path / "arch.json"), "--x1", str(tmp_path / "x.npy"),
                 "--get", "ntk", "--dtype", "float32", "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved.files == ["ntk"] and saved["ntk"].dtype == np.float32


def test_predict_command_matches_predict_from_spec(tmp_path):
    x, x_test = write_inputs(tmp_path)
    y = np.load(tmp_path / "train.npz")["y"]
    out = tmp_path / "p.npz"
    assert main(["predict", "--arch", str(tmp_path / "arch.json"), "--train", str(tmp_path / "train.npz"),
                 "--test", str(tmp_path / "x_test.npy"), "--t", "1,inf", "--diag-reg", "1e-4",
                 "--out", str(out)]) == 0
    saved = np.load(out)
    expected = predict_from_spec(SPEC, x, y, x_test, t=[1.0, float("inf")], diag_reg=1e-4)
    np.testing.assert_allclose(saved["mean"], expected.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(saved["covariance"], expected.covariance.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(saved["t"], [1.0, np.inf])
    assert saved["max_learning_rate"] > 0


def ntk(capsys, *argv):
    """Run ``ntk argv`` in this process: (exit status, stderr)."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, --version, a wrong command line
        status = e.code
    return status, capsys.readouterr().err


def assert_one_clean_line(err: str, *names: str) -> None:
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert re.match(r"ntk( \w+)?: error: ", last), err
    for name in names:
        assert name in last, err


CONV = {"layers": [{"type": "Conv", "out_chan": 4, "filter_shape": [3, 3]}, {"type": "Flatten"},
                   {"type": "Dense", "out_dim": 1}]}


def write_bad_inputs(tmp):
    write_inputs(tmp)
    (tmp / "conv.json").write_text(json.dumps(CONV))
    (tmp / "unknown.json").write_text(json.dumps({"layers": [{"type": "Dnse", "out_dim": 3}]}))
    (tmp / "broken.json").write_text('{"layers": [')
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "text.npy").write_text("not an array")
    np.save(tmp / "strings.npy", np.array([["a", "b", "c"]]))
    np.save(tmp / "nan.npy", np.full((2, 3), np.nan))
    np.savez(tmp / "no_y.npz", x=np.ones((3, 3)))
    np.savez(tmp / "short_y.npz", x=np.load(tmp / "x.npy"), y=np.ones((5, 1)))


def kernel(arch="arch.json", x1="x.npy", out="k.npz", *more):
    return ["kernel", "--arch", arch, "--x1", x1, "--out", out, *more]


def predict(train="train.npz", *more):
    return ["predict", "--arch", "arch.json", "--train", train, "--test", "x.npy", "--out", "p.npz", *more]


# each mistake: (argv, with file names in the test's directory; exit status; what the message must name)
USER_ERRORS = {
    "missing spec": (kernel("nope.json"), 1, "nope.json: No such file"),
    "spec not JSON": (kernel("broken.json"), 1, "not valid JSON"),
    "spec not an object": (kernel("list.json"), 1, "JSON object"),
    "unknown layer": (kernel("unknown.json"), 1, "invalid architecture: layers[0]"),
    "spec that cannot run on the inputs": (kernel("conv.json"), 1, "Conv needs spatial axes"),
    "missing array": (kernel(x1="missing.npy"), 1, "missing.npy"),
    "text as .npy": (kernel(x1="text.npy"), 1, "not a .npy or .npz file"),
    "strings": (kernel(x1="strings.npy"), 1, "not numbers"),
    "NaN inputs": (kernel(x1="nan.npy"), 1, "NaN"),
    "no such device": (kernel("arch.json", "x.npy", "k.npz", "--device", "cuda:99"), 1, "cuda:99"),
    "not a device": (kernel("arch.json", "x.npy", "k.npz", "--device", "banana"), 1, "banana"),
    "unwritable output": (kernel(out="no-dir/k.npz"), 1, "cannot write"),
    "bad --dtype": (kernel("arch.json", "x.npy", "k.npz", "--dtype", "float16"), 2, "--dtype"),
    "--url without a scheme": (kernel("arch.json", "x.npy", "k.npz", "--url", "localhost:8000"), 2, "http://"),
    "--url not a URL": (kernel("arch.json", "x.npy", "k.npz", "--url", "http://[::1"), 2, "--url"),
    "bad --t": (predict("train.npz", "--t", "soon"), 2, "--t"),
    "negative --t": (predict("train.npz", "--t", "1,-1"), 2, "--t"),
    ".npy as --train": (predict("x.npy"), 2, "--train takes an .npz"),
    "--train without y": (predict("no_y.npz"), 1, "no array 'y'"),
    "y of the wrong length": (predict("short_y.npz"), 1, "y_train"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_a_user_error_is_one_line_and_a_nonzero_exit(tmp_path, capsys, monkeypatch, case):
    write_bad_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv, status, name = USER_ERRORS[case]
    got, err = ntk(capsys, *argv)
    assert got == status, err
    assert_one_clean_line(err, name)


def test_a_user_error_prints_no_traceback_from_the_installed_command(tmp_path):
    write_inputs(tmp_path)
    done = subprocess.run([sys.executable, "-m", "ntk.cli", "predict", "--arch", tmp_path / "arch.json",
                           "--train", tmp_path / "x.npy", "--test", tmp_path / "x.npy", "--out", tmp_path / "p.npz"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert_one_clean_line(done.stderr, "x.npy", "--train takes an .npz")
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("command, env, name", [
    (["serve"], {"NTK_TILE": "many"}, "NTK_TILE='many'"),
    (["worker", "--device", "cpu"], {"NTK_REDIS_URL": "redis://127.0.0.1:{port}/0"}, "cannot reach Redis"),
])
def test_serve_and_worker_report_a_bad_setting_or_redis_in_one_line(free_tcp_port, command, env, name):
    env = {k: v.format(port=free_tcp_port()) for k, v in env.items()}
    done = subprocess.run([sys.executable, "-m", "ntk.cli", *command], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 1
    assert_one_clean_line(done.stderr, name)


class ProblemServer:
    """An HTTP server answering every request with one problem+json status; it keeps the JSON bodies."""

    def __init__(self, status: int, detail: str):
        self.bodies = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.bodies.append(json.loads(body) if body else None)
                self.do_GET()

            def do_GET(self):
                payload = json.dumps({"type": "about:blank", "title": "Refused", "status": status,
                                      "detail": detail}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status", [401, 403, 404, 409, 413, 422])
def test_a_server_refusal_is_one_line_naming_status_and_detail(tmp_path, capsys, status):
    write_inputs(tmp_path)
    server = ProblemServer(status, "the server's reason")
    try:
        got, err = ntk(capsys, "kernel", "--arch", tmp_path / "arch.json", "--x1", tmp_path / "x.npy",
                       "--out", tmp_path / "k.npz", "--url", server.url)
    finally:
        server.close()
    assert got == 1
    assert_one_clean_line(err, server.url, str(status), "the server's reason")


def test_a_server_that_is_down_is_one_line(tmp_path, capsys, monkeypatch, free_tcp_port):
    write_inputs(tmp_path)
    url = f"http://127.0.0.1:{free_tcp_port()}"  # nothing listens there
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the SDK's retries, without their backoff
    got, err = ntk(capsys, "predict", "--arch", tmp_path / "arch.json", "--train", tmp_path / "train.npz",
                   "--test", tmp_path / "x_test.npy", "--out", tmp_path / "p.npz", "--url", url)
    assert got == 1
    assert_one_clean_line(err, f"no answer from {url}")


def test_url_without_the_sdk_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    write_inputs(tmp_path)
    monkeypatch.setitem(sys.modules, "ntk_client", None)  # as if clients/python were not installed
    got, err = ntk(capsys, "kernel", "--arch", tmp_path / "arch.json", "--x1", tmp_path / "x.npy",
                   "--out", tmp_path / "k.npz", "--url", "http://127.0.0.1:8000")
    assert got == 1
    assert_one_clean_line(err, "pip install -e clients/python")


def test_an_internal_error_keeps_its_traceback_with_a_hint(tmp_path, capsys, monkeypatch):
    write_inputs(tmp_path)
    monkeypatch.setattr("ntk.cli.kernel.compute_locally", lambda *args: 1 / 0)
    got, err = ntk(capsys, "kernel", "--arch", tmp_path / "arch.json", "--x1", tmp_path / "x.npy",
                   "--out", tmp_path / "k.npz")
    assert got == 1
    assert "Traceback" in err and "ZeroDivisionError" in err and "ntk: internal error" in err


def test_monte_carlo_samples_default_to_the_services(tmp_path, capsys):
    x, _ = write_inputs(tmp_path)
    out = tmp_path / "k.npz"
    assert main(["kernel", "--arch", str(tmp_path / "arch.json"), "--x1", str(tmp_path / "x.npy"),
                 "--method", "monte_carlo", "--get", "ntk", "--out", str(out)]) == 0
    expected = monte_carlo_kernel_fn(SPEC, x, get=("ntk",), samples=DEFAULT_SAMPLES, seed=0)
    np.testing.assert_array_equal(np.load(out)["ntk"], expected["ntk"].numpy())
    assert f"default: {DEFAULT_SAMPLES}," in help_text(capsys, "kernel")
    # with --url the CLI leaves the number to the service, which takes the same default
    server = ProblemServer(401, "no key")
    try:
        ntk(capsys, "kernel", "--arch", tmp_path / "arch.json", "--x1", tmp_path / "x.npy", "--method",
            "monte_carlo", "--out", out, "--url", server.url)
    finally:
        server.close()
    assert server.bodies and server.bodies[0]["method"] == "monte_carlo" and "samples" not in server.bodies[0]


LABELS = np.array([3, 7, 9, 3, 7, 9, 3, 7, 9, 9, 3, 7])  # classes that are not 0..k-1


def predict_one_hot(tmp_path, *url):
    x, _ = write_inputs(tmp_path)
    np.savez(tmp_path / "labelled.npz", x=x, y=LABELS)
    out = tmp_path / f"p{len(url)}.npz"
    assert main(["predict", "--arch", str(tmp_path / "arch.json"), "--train", str(tmp_path / "labelled.npz"),
                 "--test", str(tmp_path / "x_test.npy"), "--targets", "one_hot", "--diag-reg", "1e-4",
                 "--out", str(out), *url]) == 0
    return x, np.load(out)


def test_one_hot_labels_are_the_classes_in_column_order(tmp_path):
    x, saved = predict_one_hot(tmp_path)
    np.testing.assert_array_equal(saved["labels"], [3, 7, 9])
    y, classes = class_targets(LABELS)
    expected = predict_from_spec(SPEC, x, y, np.load(tmp_path / "x_test.npy"), diag_reg=1e-4)
    assert saved["mean"].shape == (4, 3)
    np.testing.assert_allclose(saved["mean"], expected.mean.numpy(), rtol=1e-12)


def test_one_hot_answers_the_same_locally_and_with_url(tmp_path, service_url):
    _, local = predict_one_hot(tmp_path)
    _, remote = predict_one_hot(tmp_path, "--url", service_url)
    np.testing.assert_array_equal(remote["labels"], local["labels"])
    np.testing.assert_allclose(remote["mean"], local["mean"], rtol=1e-9, atol=1e-12)


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_version_is_the_installed_packages():
    done = subprocess.run([sys.executable, "-m", "ntk.cli", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"ntk {importlib.metadata.version('ntk-service')}"


def test_serve_help_shows_the_defaults(capsys):
    text = help_text(capsys, "serve")
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: 1)"):
        assert default in text


def test_serve_host_default_is_the_documented_one():
    """README (and docs/) show ``ntk serve [--host H]`` with the default the parser has."""
    host = build_parser().parse_args(["serve"]).host
    documented = [m for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
                  for line in doc.read_text().splitlines() if "ntk serve" in line
                  for m in re.findall(r"\[--host ([^\]\s]+)\]", line)]
    assert documented and set(documented) == {host}
