#!/usr/bin/env python3
"""Generate alembic's committed ONNX model and data fixtures (numpy only, CPU only).

Regenerate (from the repository root; the venv lives in models/.venv-fixtures,
which models/.gitignore keeps out of git):

    python3 -m venv models/.venv-fixtures \
      && models/.venv-fixtures/bin/pip install -r models/requirements.txt \
      && models/.venv-fixtures/bin/python models/make_fixtures.py

Verify the committed files:

    cd models && sha256sum -c SHA256SUMS

Scenario
--------
* A STUDENT MLP (Flatten -> Gemm 64->32 -> Relu -> Gemm 32->10) was pretrained
  "elsewhere" on clean 8x8 digits only.
* The user's own data (the *refinement* split) comes from a shifted
  distribution: every image is moved by up to +-1 px, rotated by up to +-15
  degrees, and gets gaussian noise (sigma 0.05), clipped to [0, 1].
* A TEACHER CNN, trained with augmentation of that same kind and label
  smoothing, is strong on both clean and shifted digits.  Its cached soft
  labels on the refinement data are the signal for on-device distillation.

Outputs (all paths relative to models/)
--------------------------------------
teacher.onnx, student.onnx            opset 17, ir_version 8, input "input"
                                      [N,1,8,8] float32, output "logits" [N,10]
data/{train,heldout,refine,refine_test}_{x,y}.npy
                                      x float32 [N,1,8,8] in [0,1], y int64 [N]
expected/{teacher,student}_heldout_logits.npy
                                      numpy-forward logits (float32 [32,10]) of
                                      the first 32 heldout samples
fixtures.json                         accuracies, confidences, split sizes, seeds
SHA256SUMS                            sha256sum of every generated file

Everything is seeded; BLAS is pinned to one thread so that a rerun on the same
machine reproduces the files bit for bit (a different CPU/BLAS kernel may
change the last bits of the trained weights, and so the hashes).
"""

import os

# Single-threaded BLAS for reproducibility; must be set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import sklearn  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = Path(__file__).resolve().parent

SEEDS = {
    "split": 20240601,
    "refine_shift": 7,
    "teacher_init": 11,
    "teacher_train": 12,
    "student_init": 21,
    "student_train": 22,
}

NUM_CLASSES = 10
OPSET = 17
IR_VERSION = 8
BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # running = m * running + (1 - m) * batch
DROPOUT_RATIO = 0.1
LABEL_SMOOTHING = 0.1
N_EXPECTED = 32


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def warp_batch(x, rng, max_shift=1.0, max_deg=15.0, noise=0.05):
    """Random rotation about the image centre + sub-pixel shift + gaussian noise.

    x: float32 [N,1,H,W] in [0,1].  Bilinear sampling with zero padding.
    """
    n, _, h, w = x.shape
    theta = np.deg2rad(rng.uniform(-max_deg, max_deg, size=n))
    tx = rng.uniform(-max_shift, max_shift, size=n)
    ty = rng.uniform(-max_shift, max_shift, size=n)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    # output pixel p -> source q = R(-theta) (p - c - t) + c
    dy = yy[None] - cy - ty[:, None, None]
    dx = xx[None] - cx - tx[:, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    sy = c * dy - s * dx + cy
    sx = s * dy + c * dx + cx
    y0 = np.floor(sy).astype(np.int64)
    x0 = np.floor(sx).astype(np.int64)
    fy, fx = sy - y0, sx - x0
    img = x[:, 0].astype(np.float64)
    idx = np.arange(n)[:, None, None]
    out = np.zeros((n, h, w), dtype=np.float64)
    for oy, ox, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                       (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + oy, x0 + ox
        valid = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        vals = img[idx, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
        out += np.where(valid, vals, 0.0) * wt
    out += rng.normal(0.0, noise, size=out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)[:, None]


def make_splits():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8]
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    s = SEEDS["split"]
    tr, rest = train_test_split(idx, train_size=0.6, stratify=y, random_state=s)
    ho, rf = train_test_split(rest, train_size=0.5, stratify=y[rest], random_state=s + 1)
    rng = np.random.default_rng(SEEDS["refine_shift"])
    rf_x = warp_batch(x[rf], rng)
    rf_y = y[rf]
    r_idx = np.arange(len(rf))
    r_tr, r_te = train_test_split(r_idx, train_size=0.75, stratify=rf_y, random_state=s + 2)
    return {
        "train": (x[tr], y[tr]),
        "heldout": (x[ho], y[ho]),
        "refine": (rf_x[r_tr], rf_y[r_tr]),
        "refine_test": (rf_x[r_te], rf_y[r_te]),
    }


# --------------------------------------------------------------------------
# numpy layers (NCHW)
# --------------------------------------------------------------------------

def im2col3(x):
    """x [N,C,H,W] -> cols [N*H*W, C*9] for a 3x3 kernel, pad 1, stride 1."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack([xp[:, :, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)], axis=2)
    return patches.transpose(0, 3, 4, 1, 2).reshape(n * h * w, c * 9)


def col2im3(dcols, shape):
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 9).transpose(0, 3, 4, 1, 2)  # [N,C,9,H,W]
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dcols.dtype)
    k = 0
    for ky in range(3):
        for kx in range(3):
            dxp[:, :, ky:ky + h, kx:kx + w] += d[:, :, k]
            k += 1
    return dxp[:, :, 1:-1, 1:-1]


def conv_fwd(x, wt, b=None):
    n, _, h, w = x.shape
    o = wt.shape[0]
    cols = im2col3(x)
    out = cols @ wt.reshape(o, -1).T
    if b is not None:
        out = out + b
    return out.reshape(n, h, w, o).transpose(0, 3, 1, 2), cols


def conv_bwd(dout, cols, wt, xshape):
    o = wt.shape[0]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (d.T @ cols).reshape(wt.shape)
    db = d.sum(axis=0)
    dx = col2im3(d @ wt.reshape(o, -1), xshape)
    return dx, dw, db


def bn_train_fwd(x, gamma, beta):
    mu = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    inv = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (x - mu[None, :, None, None]) * inv[None, :, None, None]
    return gamma[None, :, None, None] * xhat + beta[None, :, None, None], (xhat, inv), mu, var


def bn_bwd(dout, cache, gamma):
    xhat, inv = cache
    m = dout.shape[0] * dout.shape[2] * dout.shape[3]
    dgamma = (dout * xhat).sum(axis=(0, 2, 3))
    dbeta = dout.sum(axis=(0, 2, 3))
    dxhat = dout * gamma[None, :, None, None]
    dx = (inv[None, :, None, None] / m) * (
        m * dxhat
        - dxhat.sum(axis=(0, 2, 3))[None, :, None, None]
        - xhat * (dxhat * xhat).sum(axis=(0, 2, 3))[None, :, None, None]
    )
    return dx, dgamma, dbeta


def bn_infer(x, gamma, beta, mean, var):
    sh = (None, slice(None), None, None)
    return (x - mean[sh]) / np.sqrt(var[sh] + BN_EPS) * gamma[sh] + beta[sh]


def maxpool_fwd(x):
    n, c, h, w = x.shape
    xr = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = xr.max(axis=(3, 5))
    return out, xr


def maxpool_bwd(dout, xr, out):
    mask = xr == out[:, :, :, None, :, None]
    # route the gradient to the first maximum only (ties are split otherwise)
    mask = mask.astype(dout.dtype)
    flat = mask.transpose(0, 1, 2, 4, 3, 5).reshape(*out.shape, 4)
    first = np.zeros_like(flat)
    am = flat.argmax(axis=-1)
    np.put_along_axis(first, am[..., None], 1.0, axis=-1)
    first = first.reshape(*out.shape, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    dx = first * dout[:, :, :, None, :, None]
    n, c, h2, _, w2, _ = dx.shape
    return dx.reshape(n, c, h2 * 2, w2 * 2)


def softmax(z, t=1.0):
    z = z / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def xent_grad(logits, y, smoothing):
    p = softmax(logits.astype(np.float64))
    tgt = np.full_like(p, smoothing / NUM_CLASSES)
    tgt[np.arange(len(y)), y] += 1.0 - smoothing
    loss = -(tgt * np.log(p + 1e-12)).sum(axis=1).mean()
    return loss, ((p - tgt) / len(y)).astype(np.float32)


class Adam:
    def __init__(self, params, lr, wd=0.0, b1=0.9, b2=0.999, eps=1e-8):
        self.params, self.lr, self.wd, self.b1, self.b2, self.eps = params, lr, wd, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads, lr, decay_keys=()):
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            upd = (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)
            if k in decay_keys:
                upd = upd + self.wd * self.params[k]
            self.params[k] -= (lr * upd).astype(np.float32)


def cosine_lr(base, step, total, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + np.cos(np.pi * p))


# --------------------------------------------------------------------------
# Teacher CNN
# --------------------------------------------------------------------------

def he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def teacher_init():
    rng = np.random.default_rng(SEEDS["teacher_init"])
    f32 = np.float32
    return {
        "conv1.W": he(rng, (16, 1, 3, 3), 9),
        "bn1.scale": np.ones(16, f32), "bn1.B": np.zeros(16, f32),
        "bn1.mean": np.zeros(16, f32), "bn1.var": np.ones(16, f32),
        "conv2.W": he(rng, (32, 16, 3, 3), 144),
        "bn2.scale": np.ones(32, f32), "bn2.B": np.zeros(32, f32),
        "bn2.mean": np.zeros(32, f32), "bn2.var": np.ones(32, f32),
        "conv3.W": he(rng, (32, 32, 3, 3), 288), "conv3.B": np.zeros(32, f32),
        "fc.W": (rng.standard_normal((10, 32)) * np.sqrt(1.0 / 32)).astype(f32),
        "fc.B": np.zeros(10, f32),
    }


TEACHER_TRAINABLE = ["conv1.W", "bn1.scale", "bn1.B", "conv2.W", "bn2.scale", "bn2.B",
                     "conv3.W", "conv3.B", "fc.W", "fc.B"]


def teacher_train_step(p, x, y, rng):
    # forward
    c1, cols1 = conv_fwd(x, p["conv1.W"])
    b1, bc1, mu1, var1 = bn_train_fwd(c1, p["bn1.scale"], p["bn1.B"])
    r1 = np.maximum(b1, 0)
    c2, cols2 = conv_fwd(r1, p["conv2.W"])
    b2, bc2, mu2, var2 = bn_train_fwd(c2, p["bn2.scale"], p["bn2.B"])
    r2 = np.maximum(b2, 0)
    mp, mpr = maxpool_fwd(r2)
    c3, cols3 = conv_fwd(mp, p["conv3.W"], p["conv3.B"])
    r3 = np.maximum(c3, 0)
    g = r3.mean(axis=(2, 3))  # GAP + Flatten
    keep = (rng.random(g.shape) >= DROPOUT_RATIO).astype(np.float32) / (1 - DROPOUT_RATIO)
    gd = g * keep
    logits = gd @ p["fc.W"].T + p["fc.B"]
    loss, dl = xent_grad(logits, y, LABEL_SMOOTHING)
    # backward
    gr = {}
    gr["fc.W"] = dl.T @ gd
    gr["fc.B"] = dl.sum(axis=0)
    dg = (dl @ p["fc.W"]) * keep
    dr3 = np.broadcast_to(dg[:, :, None, None] / 16.0, r3.shape)
    dc3 = dr3 * (c3 > 0)
    dmp, gr["conv3.W"], gr["conv3.B"] = conv_bwd(dc3, cols3, p["conv3.W"], mp.shape)
    dr2 = maxpool_bwd(dmp, mpr, mp)
    db2 = dr2 * (b2 > 0)
    dc2, gr["bn2.scale"], gr["bn2.B"] = bn_bwd(db2, bc2, p["bn2.scale"])
    dr1, gr["conv2.W"], _ = conv_bwd(dc2, cols2, p["conv2.W"], r1.shape)
    db1 = dr1 * (b1 > 0)
    dc1, gr["bn1.scale"], gr["bn1.B"] = bn_bwd(db1, bc1, p["bn1.scale"])
    _, gr["conv1.W"], _ = conv_bwd(dc1, cols1, p["conv1.W"], x.shape)
    # running statistics (ONNX/PyTorch convention: unbiased variance for running var)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    for name, mu, var in (("bn1", mu1, var1), ("bn2", mu2, var2)):
        p[name + ".mean"] = (BN_MOMENTUM * p[name + ".mean"] + (1 - BN_MOMENTUM) * mu).astype(np.float32)
        p[name + ".var"] = (BN_MOMENTUM * p[name + ".var"]
                            + (1 - BN_MOMENTUM) * var * m / (m - 1)).astype(np.float32)
    return loss, gr, logits


def teacher_forward(p, x):
    """Inference forward, in float64 from the float32 weights (the reference)."""
    q = {k: v.astype(np.float64) for k, v in p.items()}
    x = x.astype(np.float64)
    h = conv_fwd(x, q["conv1.W"])[0]
    h = np.maximum(bn_infer(h, q["bn1.scale"], q["bn1.B"], q["bn1.mean"], q["bn1.var"]), 0)
    h = conv_fwd(h, q["conv2.W"])[0]
    h = np.maximum(bn_infer(h, q["bn2.scale"], q["bn2.B"], q["bn2.mean"], q["bn2.var"]), 0)
    h = maxpool_fwd(h)[0]
    h = np.maximum(conv_fwd(h, q["conv3.W"], q["conv3.B"])[0], 0)
    h = h.mean(axis=(2, 3))
    return h @ q["fc.W"].T + q["fc.B"]


def recalibrate_bn(p, x, batch=256):
    """Final pass: set running stats to the population statistics of (augmented) data."""
    def stats(h):
        return h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3))
    h = conv_fwd(x.astype(np.float64), p["conv1.W"].astype(np.float64))[0]
    mu, var = stats(h)
    p["bn1.mean"], p["bn1.var"] = mu.astype(np.float32), var.astype(np.float32)
    h = np.maximum(bn_infer(h, p["bn1.scale"], p["bn1.B"], mu, var), 0)
    h = conv_fwd(h, p["conv2.W"].astype(np.float64))[0]
    mu, var = stats(h)
    p["bn2.mean"], p["bn2.var"] = mu.astype(np.float32), var.astype(np.float32)


def train_teacher(x, y, epochs=80, batch=64, lr=3e-3, wd=1e-4):
    p = teacher_init()
    rng = np.random.default_rng(SEEDS["teacher_train"])
    opt = Adam({k: p[k] for k in TEACHER_TRAINABLE}, lr=lr, wd=wd)
    opt.params = p  # update in place in the shared dict
    steps_per_epoch = int(np.ceil(len(y) / batch))
    total = epochs * steps_per_epoch
    step = 0
    decay = {"conv1.W", "conv2.W", "conv3.W", "fc.W"}
    for ep in range(epochs):
        perm = rng.permutation(len(y))
        tot_loss, correct = 0.0, 0
        for i in range(steps_per_epoch):
            bi = perm[i * batch:(i + 1) * batch]
            xb = x[bi]
            # augment: 3/4 of each batch warped like the shift, 1/4 clean
            aug = rng.random(len(bi)) < 0.75
            if aug.any():
                xb = xb.copy()
                xb[aug] = warp_batch(xb[aug], rng)
            loss, gr, logits = teacher_train_step(p, xb, y[bi], rng)
            opt.step(gr, cosine_lr(lr, step, total, steps_per_epoch), decay_keys=decay)
            step += 1
            tot_loss += loss * len(bi)
            correct += int((logits.argmax(1) == y[bi]).sum())
        if ep % 10 == 0 or ep == epochs - 1:
            print(f"  teacher epoch {ep:3d} loss {tot_loss / len(y):.4f} train-acc {correct / len(y):.4f}",
                  flush=True)
    # population BN stats over the same mix of clean + warped training data
    mix = np.concatenate([x, warp_batch(x, rng), warp_batch(x, rng), warp_batch(x, rng)])
    recalibrate_bn(p, mix)
    return p


# --------------------------------------------------------------------------
# Student MLP
# --------------------------------------------------------------------------

def student_init():
    rng = np.random.default_rng(SEEDS["student_init"])
    return {
        "fc1.W": he(rng, (32, 64), 64), "fc1.B": np.zeros(32, np.float32),
        "fc2.W": (rng.standard_normal((10, 32)) * np.sqrt(1.0 / 32)).astype(np.float32),
        "fc2.B": np.zeros(10, np.float32),
    }


def student_forward(p, x):
    q = {k: v.astype(np.float64) for k, v in p.items()}
    h = x.reshape(len(x), -1).astype(np.float64)
    h = np.maximum(h @ q["fc1.W"].T + q["fc1.B"], 0)
    return h @ q["fc2.W"].T + q["fc2.B"]


def train_student(x, y, epochs=60, batch=32, lr=3e-3, wd=1e-4):
    p = student_init()
    rng = np.random.default_rng(SEEDS["student_train"])
    opt = Adam(p, lr=lr, wd=wd)
    xf = x.reshape(len(x), -1)
    steps_per_epoch = int(np.ceil(len(y) / batch))
    total = epochs * steps_per_epoch
    step = 0
    for ep in range(epochs):
        perm = rng.permutation(len(y))
        tot_loss, correct = 0.0, 0
        for i in range(steps_per_epoch):
            bi = perm[i * batch:(i + 1) * batch]
            xb = xf[bi]
            a = xb @ p["fc1.W"].T + p["fc1.B"]
            h = np.maximum(a, 0)
            logits = h @ p["fc2.W"].T + p["fc2.B"]
            loss, dl = xent_grad(logits, y[bi], 0.0)
            dh = (dl @ p["fc2.W"]) * (a > 0)
            gr = {"fc2.W": dl.T @ h, "fc2.B": dl.sum(0), "fc1.W": dh.T @ xb, "fc1.B": dh.sum(0)}
            opt.step(gr, cosine_lr(lr, step, total, steps_per_epoch), decay_keys={"fc1.W", "fc2.W"})
            step += 1
            tot_loss += loss * len(bi)
            correct += int((logits.argmax(1) == y[bi]).sum())
        if ep % 10 == 0 or ep == epochs - 1:
            print(f"  student epoch {ep:3d} loss {tot_loss / len(y):.4f} train-acc {correct / len(y):.4f}",
                  flush=True)
    return p


# --------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------

def io_infos():
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES])
    return inp, out


def init(name, arr):
    return numpy_helper.from_array(np.array(arr, dtype=np.float32, order="C"), name=name)


def finish_model(graph, doc):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="alembic-make_fixtures",
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def export_teacher(p):
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "conv1.W"], ["conv1_out"], name="conv1", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1], strides=[1, 1]),
        n("BatchNormalization", ["conv1_out", "bn1.scale", "bn1.B", "bn1.mean", "bn1.var"], ["bn1_out"],
          name="bn1", epsilon=BN_EPS, momentum=BN_MOMENTUM),
        n("Relu", ["bn1_out"], ["relu1_out"], name="relu1"),
        n("Conv", ["relu1_out", "conv2.W"], ["conv2_out"], name="conv2", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1], strides=[1, 1]),
        n("BatchNormalization", ["conv2_out", "bn2.scale", "bn2.B", "bn2.mean", "bn2.var"], ["bn2_out"],
          name="bn2", epsilon=BN_EPS, momentum=BN_MOMENTUM),
        n("Relu", ["bn2_out"], ["relu2_out"], name="relu2"),
        n("MaxPool", ["relu2_out"], ["pool1_out"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["pool1_out", "conv3.W", "conv3.B"], ["conv3_out"], name="conv3", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1], strides=[1, 1]),
        n("Relu", ["conv3_out"], ["relu3_out"], name="relu3"),
        n("GlobalAveragePool", ["relu3_out"], ["gap_out"], name="gap"),
        n("Flatten", ["gap_out"], ["flatten_out"], name="flatten", axis=1),
        n("Dropout", ["flatten_out", "dropout.ratio"], ["dropout_out"], name="dropout"),
        n("Gemm", ["dropout_out", "fc.W", "fc.B"], ["logits"], name="fc", alpha=1.0, beta=1.0, transB=1),
    ]
    names = ["conv1.W", "bn1.scale", "bn1.B", "bn1.mean", "bn1.var", "conv2.W", "bn2.scale", "bn2.B",
             "bn2.mean", "bn2.var", "conv3.W", "conv3.B", "fc.W", "fc.B"]
    inits = [init(k, p[k]) for k in names] + [init("dropout.ratio", np.array(DROPOUT_RATIO))]
    inp, out = io_infos()
    graph = helper.make_graph(nodes, "digits_teacher_cnn", [inp], [out], initializer=inits)
    return finish_model(graph, "Digits teacher CNN (8x8, pixels/16), raw logits; numpy-trained.")


def export_student(p):
    n = helper.make_node
    nodes = [
        n("Flatten", ["input"], ["flatten_out"], name="flatten", axis=1),
        n("Gemm", ["flatten_out", "fc1.W", "fc1.B"], ["fc1_out"], name="fc1", alpha=1.0, beta=1.0, transB=1),
        n("Relu", ["fc1_out"], ["relu1_out"], name="relu1"),
        n("Gemm", ["relu1_out", "fc2.W", "fc2.B"], ["logits"], name="fc2", alpha=1.0, beta=1.0, transB=1),
    ]
    inits = [init(k, p[k]) for k in ["fc1.W", "fc1.B", "fc2.W", "fc2.B"]]
    inp, out = io_infos()
    graph = helper.make_graph(nodes, "digits_student_mlp", [inp], [out], initializer=inits)
    return finish_model(graph, "Digits student MLP (8x8, pixels/16), raw logits; numpy-trained on clean data.")


def ort_logits(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


# --------------------------------------------------------------------------

def acc(logits, y):
    return float((logits.argmax(1) == y).mean())


def main():
    t0 = time.time()
    data_dir = HERE / "data"
    exp_dir = HERE / "expected"
    data_dir.mkdir(exist_ok=True)
    exp_dir.mkdir(exist_ok=True)

    splits = make_splits()
    for name, (x, y) in splits.items():
        assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and y.dtype == np.int64
        print(f"split {name:12s} {len(y):5d}  class counts {np.bincount(y, minlength=10).tolist()}")
        np.save(data_dir / f"{name}_x.npy", x)
        np.save(data_dir / f"{name}_y.npy", y)

    xtr, ytr = splits["train"]
    print("training teacher ...", flush=True)
    tp = train_teacher(xtr, ytr)
    print(f"  ({time.time() - t0:.1f}s)")
    print("training student ...", flush=True)
    sp = train_student(xtr, ytr)
    print(f"  ({time.time() - t0:.1f}s)")

    models = {
        "teacher": (export_teacher(tp), lambda x: teacher_forward(tp, x)),
        "student": (export_student(sp), lambda x: student_forward(sp, x)),
    }
    metrics = {}
    for mname, (model, fwd) in models.items():
        path = HERE / f"{mname}.onnx"
        onnx.save_model(model, str(path))
        onnx.checker.check_model(str(path), full_check=True)
        metrics[mname] = {}
        for sname, (x, y) in splits.items():
            ref = fwd(x)
            got = ort_logits(path, x)
            diff = float(np.abs(got.astype(np.float64) - ref).max())
            assert got.shape == (len(y), NUM_CLASSES), got.shape
            assert diff < 1e-4, f"{mname}/{sname}: onnxruntime vs numpy max abs diff {diff}"
            metrics[mname][f"{sname}_accuracy"] = round(acc(ref, y), 6)
            metrics[mname][f"{sname}_ort_max_abs_diff"] = float(f"{diff:.3g}")
        xh = splits["heldout"][0][:N_EXPECTED]
        np.save(exp_dir / f"{mname}_heldout_logits.npy", fwd(xh).astype(np.float32))
        ops = [f"{nd.op_type}({nd.name})" for nd in model.graph.node]
        print(f"{mname}: {path.stat().st_size} bytes; nodes: {' -> '.join(ops)}")

    rx = splits["refine"][0]
    tl = teacher_forward(tp, rx)
    for t in (1.0, 4.0):
        metrics["teacher"][f"refine_mean_top1_prob_T{t:g}"] = round(float(softmax(tl, t).max(1).mean()), 6)

    info = {
        "description": "alembic digits fixtures: teacher CNN + student MLP, shifted refinement split",
        "generator": "models/make_fixtures.py",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "scikit-learn": sklearn.__version__, "onnx": onnx.__version__,
                     "onnxruntime": ort.__version__},
        "seeds": SEEDS,
        "split_sizes": {k: int(len(v[1])) for k, v in splits.items()},
        "input": {"name": "input", "shape": ["N", 1, 8, 8], "dtype": "float32", "scaling": "pixel/16"},
        "output": {"name": "logits", "shape": ["N", 10], "dtype": "float32", "kind": "raw logits"},
        "refine_shift": {"max_shift_px": 1.0, "max_rotation_deg": 15.0, "noise_sigma": 0.05,
                         "clip": [0.0, 1.0], "sampling": "bilinear, zero padding"},
        "teacher_training": {"label_smoothing": LABEL_SMOOTHING, "augmentation": "same kind as refine shift",
                             "dropout_ratio": DROPOUT_RATIO},
        "expected_logits_samples": N_EXPECTED,
        "metrics": metrics,
    }
    (HERE / "fixtures.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(json.dumps(metrics, indent=2, sort_keys=True))

    generated = sorted(
        [p for p in HERE.glob("*.onnx")] + [p for p in data_dir.glob("*.npy")]
        + [p for p in exp_dir.glob("*.npy")] + [HERE / "fixtures.json"]
    )
    lines = []
    for p in generated:
        rel = p.relative_to(HERE).as_posix()
        lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {rel}\n")
    (HERE / "SHA256SUMS").write_text("".join(lines))
    print(f"wrote {len(lines)} checksums; done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
