"""POST /v1/predict: the infinite ensemble's mean and covariance after training for time t."""

from __future__ import annotations

from fastapi import Request

from ntk.api import deps, jobs, limits
from ntk.api.inputs import Inputs, fits, same_features
from ntk.api.routers.compute import PROBLEMS, WAIT, job_router
from ntk.api.schemas import Accepted, PredictAnswer, PredictRequest
from ntk.core.job import PredictJob

router = job_router("predict")

ANSWERS = {200: {"model": PredictAnswer, "content": {jobs.NPZ: {}}}, 202: {"model": Accepted}, **PROBLEMS}


@router.post("/predict", responses=ANSWERS)
async def predict(body: PredictRequest, request: Request, settings: deps.SettingsDep, tenant: deps.TenantDep,
                  wait: float = WAIT):
    limits.check_depth(settings, body.architecture)  # before any input is read: the cheapest check
    inputs = Inputs(request)
    x_train = await inputs.points(body.x_train, "x_train")
    y_train = await inputs.targets(body.y_train, "y_train", x_train["shape"][0])
    x_test = await inputs.points(body.x_test, "x_test")
    same_features(x_test, x_train, "x_test", "x_train")
    limits.check_predict(settings, body, x_train, x_test)
    job = PredictJob(**tenant.owner(settings), architecture=fits(body.architecture, x_train["shape"][1:]), dtype=body.dtype or settings.dtype,
                     x_train=x_train, y_train=y_train, x_test=x_test, kernel=body.kernel, targets=body.targets,
                     t=body.t, learning_rate=body.learning_rate, diag_reg=body.diag_reg,
                     diag_reg_absolute_scale=body.diag_reg_absolute_scale, compute_cov=body.compute_cov)
    return await jobs.compute(request, job, inputs.inline, wait, "x_train")
