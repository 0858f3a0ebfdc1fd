"""A sweep job in the worker (ntk.worker.tasks.run_sweep), in-process on the StubBroker of
test_tasks.py: one task computes every row, progress counts architectures, a cancel stops it
between them. What is asserted is the job's state and result, never time."""

from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import pytest
from test_tasks import context, run  # noqa: F401 (context is a fixture)

from ntk.core import keys, table
from ntk.core.codec import pack_array
from ntk.core.job import ArrayRef, SweepJob, request_key
from ntk.core.jobstate import END, SUBMIT, end_call, submit_call
from ntk.engine.sweep import sweep
from ntk.spec.sweep_grid import expand
from ntk.worker import tasks

BASE = {"block": [{"type": "Dense", "out_dim": 8}, {"type": "Relu"}], "readout": [{"type": "Dense", "out_dim": 1}]}
GRID = {"depth": [1, 2], "w_std": [1.0, 1.5]}
X = np.random.default_rng(0).standard_normal((6, 3))
Y = np.sin(X[:, :1])


def submit_sweep(context, diag_reg: float) -> str:
    """A sweep job on inline arrays, created as the API creates it (jobstate.SUBMIT); each test
    its own ``diag_reg``, so that none is answered by another's job."""
    inline, refs = {}, {}
    for name, a in (("x_train", X), ("y_train", Y)):
        data = pack_array(a)
        digest = hashlib.sha256(data).hexdigest()
        inline[digest], refs[name] = data, ArrayRef(digest=digest, shape=list(a.shape))
    request = SweepJob(tenant="default", cache_scope="default", base=BASE, grid=list(GRID.items()), dtype="float64", diag_reg=diag_reg, **refs)
    job_id = uuid.uuid4().hex
    script_keys, args = submit_call(job_id, request, request_key(request), "test", inline, 16)
    context.store.redis.register_script(SUBMIT)(keys=script_keys, args=args)
    return job_id


def test_one_task_computes_every_row_and_counts_architectures(context):  # noqa: F811
    job_id = submit_sweep(context, 0.01)
    job = run(context, job_id)
    assert job["status"] == "succeeded", job.get("error")
    assert int(job["total"]) == 4 and context.store.redis.scard(keys.job_tiles_done(job_id)) == 4
    assert json.loads(job["answer"]) == {"cached": False}
    got = table.from_arrays(context.store.get(keys.job_result(job_id)))
    want = sweep(expand(BASE, GRID), X, Y, diag_reg=0.01)
    assert got == {"columns": list(want[0]), "rows": want}  # JSON keeps every digit


def test_a_cancelled_sweep_stops_between_architectures(context, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tasks, "STOP_CHECK_S", 0.0)  # ask Redis at every step: the stop is exact
    job_id = submit_sweep(context, 0.02)
    cancel = context.store.redis.register_script(END)

    def sweep_cancelled_after_the_first_row(*args, progress, **kwargs):
        def progress_then_cancel(done: int, total: int) -> None:
            progress(done, total)
            job = context.jobs.get(job_id)
            cancel(*end_call(job_id, job["request_key"], "cancelled", 60))
        return sweep(*args, progress=progress_then_cancel, **kwargs)

    monkeypatch.setattr(tasks, "sweep", sweep_cancelled_after_the_first_row)
    job = run(context, job_id)
    assert job["status"] == "cancelled" and "error" not in job
    assert context.store.redis.scard(keys.job_tiles_done(job_id)) == 1  # of 4
    assert not context.store.redis.exists(keys.job_result(job_id))


@pytest.mark.parametrize("rows", [[{"depth": 1, "activation": {"type": "Erf", "b": 2.0}, "x": 0.1 + 0.2,
                                    "error": None}]])
def test_the_table_travels_as_json_and_csv(rows):
    assert table.from_arrays(table.as_arrays(rows)) == {"columns": ["depth", "activation", "x", "error"], "rows": rows}
    assert table.to_csv(table.columns(rows), rows) == (
        'depth,activation,x,error\r\n1,"{""type"":""Erf"",""b"":2.0}",0.30000000000000004,\r\n')
