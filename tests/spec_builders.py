"""Short builders of layer JSON for hand-written architectures in tests and fixture generators."""


def D(n, **kw):
    return {"type": "Dense", "out_dim": n, **kw}


def C(n, f, **kw):
    return {"type": "Conv", "out_chan": n, "filter_shape": f, **kw}


def A(t, **kw):
    return {"type": t, **kw}
