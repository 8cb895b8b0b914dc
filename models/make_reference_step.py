#!/usr/bin/env python3
"""Reference distillation step for the student MLP, computed independently of alembic in numpy.

Writes models/expected/kd_step.npz: a fixed batch (the first 8 rows of data/refine_x.npy and
their labels), the teacher's logits on it (onnxruntime), the Hinton loss at T=2, alpha=0.7 with
labels, the gradient of every student parameter, and the parameters after one SGD step
(lr 0.1, momentum 0.9: the first step is w - lr * g). Everything is float64 internally.

    /work/main/.venv/bin/python models/make_reference_step.py    # or any venv with onnx,
                                                                 # onnxruntime and numpy

The Rust test `distill::reference_step_matches_numpy` checks alembic's forward, backward and
kd_loss against this file.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
BATCH, T, ALPHA, LR = 8, 2.0, 0.7, 0.1


def softmax(z, t=1.0):
    z = z / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main():
    x = np.load(HERE / "data/refine_x.npy")[:BATCH]
    y = np.load(HERE / "data/refine_y.npy")[:BATCH]
    teacher = ort.InferenceSession(str(HERE / "teacher.onnx"), providers=["CPUExecutionProvider"])
    tz = teacher.run(["logits"], {"input": x})[0].astype(np.float32)

    # Student weights straight from the ONNX file: Flatten -> Gemm(transB) -> Relu -> Gemm(transB).
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in onnx.load(HERE / "student.onnx").graph.initializer}
    h0 = x.reshape(BATCH, -1).astype(np.float64)
    a1 = h0 @ w["fc1.W"].T + w["fc1.B"]
    h1 = np.maximum(a1, 0.0)
    z = h1 @ w["fc2.W"].T + w["fc2.B"]

    p_t = softmax(tz.astype(np.float64), T)
    q_t = softmax(z, T)
    q_1 = softmax(z)
    kl = (p_t * (np.log(p_t) - np.log(q_t))).sum(axis=1).mean()
    ce = -np.log(q_1[np.arange(BATCH), y]).mean()
    loss = ALPHA * T * T * kl + (1 - ALPHA) * ce
    onehot = np.eye(10)[y]
    # d/dz of alpha T^2 KL(p_T || q_T) + (1 - alpha) CE, averaged over the batch
    dz = (ALPHA * T * (q_t - p_t) + (1 - ALPHA) * (q_1 - onehot)) / BATCH

    g = {"fc2.W": dz.T @ h1, "fc2.B": dz.sum(axis=0)}
    da1 = (dz @ w["fc2.W"]) * (a1 > 0)
    g["fc1.W"] = da1.T @ h0
    g["fc1.B"] = da1.sum(axis=0)

    out = {"x": x, "y": y, "teacher_logits": tz, "logits": z.astype(np.float32),
           "loss": np.float64(loss), "kd": np.float64(kl), "ce": np.float64(ce),
           "temperature": np.float64(T), "alpha": np.float64(ALPHA), "lr": np.float64(LR),
           "dlogits": dz.astype(np.float32)}
    for k in w:
        key = k.replace(".", "_")
        out["grad_" + key] = g[k].astype(np.float32)
        out["sgd_" + key] = (w[k] - LR * g[k]).astype(np.float32)
    (HERE / "expected").mkdir(exist_ok=True)
    np.savez(HERE / "expected/kd_step.npz", **out)
    print(f"loss {loss:.6f} (kd {kl:.6f}, ce {ce:.6f}); grad norms "
          + ", ".join(f"{k} {np.linalg.norm(v):.4f}" for k, v in g.items()))


if __name__ == "__main__":
    main()
