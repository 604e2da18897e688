"""Model calls of one fixed shape, so that an item's result never depends on what it was batched with.

The same convolution or matrix product computed at batch 1, 3 or 8 can use different kernels and summation
orders (oneDNN and Eigen pick them by shape), so an item's outputs differ in the last bits with the batch it
travelled in (measured: up to 4e-8 on PoseNet heatmaps and IdNet probabilities, tests/unit/test_batching.py).
Which items share a call is decided by arrival in a stream (read-ahead batches), i.e. by timing and load;
near a threshold (a detection score, an argmax, a track match) last-bit differences change the analysis.

`predict_fixed` therefore always calls the model with exactly `batch_size` items: larger inputs are cut into
calls of `batch_size`, the last call is padded with copies of its last item and the padding's outputs are
dropped. With the shape fixed, the kernels and their summation order are fixed, and an item's result depends on
the item, the model and `batch_size` alone (on one machine and software stack; a different CPU, GPU or TensorFlow
build can differ in the last bits: README, "Same input, same output").

Padding costs compute only when a call is not full, i.e. when the module is waiting for work anyway: a module
that falls behind receives full read-ahead batches. `batch_size` 0 turns padding off (one call per request or
read-ahead batch, as it arrived): the cheapest on a CPU serving single items, but results may then differ in the
last bits from run to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from sipec.serving.backends import ModelBackend, Prediction
from sipec.serving.errors import Unavailable

DEFAULT_BATCH_SIZE = 8
MAX_BATCH_SIZE = 1024


def check_batch_size(value: int, flag: str = "--batch-size") -> int:
    """`value` if it is a usable batch size (0: no padding), else ValueError naming `flag`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"{flag}: must be an integer from 0 (no padding) to {MAX_BATCH_SIZE}, not {value!r}")
    return value


def predict_fixed(backend: ModelBackend, inputs: dict[str, np.ndarray], batch_size: int,
                  output_filter: list[str] | None = None, signature: str | None = None,
                  on_call: Callable[[int, float], None] | None = None) -> Prediction:
    """`backend.predict` on `inputs` (each with the same first dimension n >= 1) in calls of exactly
    `batch_size` items; outputs for the n items in order, and the model version of the calls. `batch_size` 0:
    one call with the n items as they are (no padding; results may depend on n).

    `on_call(k, seconds)` is told the number of real (not padding) items of each call and how long the backend
    took (metrics). A model version that
    changes between the calls of one input (a new version loaded in between) is an error: one input's
    results never mix two versions (Unavailable: the caller retries).
    """
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"inputs differ in their first dimension: {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("no items to predict")
    outputs: dict[str, list[np.ndarray]] = {}
    version: int | None = None
    batch_size = batch_size or n
    for start in range(0, n, batch_size):
        real = min(batch_size, n - start)
        call = {k: _padded(v[start:start + real], batch_size) for k, v in arrays.items()}
        started = time.perf_counter()
        pred = backend.predict(call, output_filter, signature)
        seconds = time.perf_counter() - started
        if version is not None and pred.model_version != version:
            raise Unavailable(f"model {backend.model_name!r} changed version during one request "
                              f"({version} -> {pred.model_version}); send it again")
        version = pred.model_version
        if on_call is not None:
            on_call(real, seconds)
        for name, value in pred.outputs.items():
            outputs.setdefault(name, []).append(np.asarray(value)[:real])
    return Prediction({k: np.concatenate(v) for k, v in outputs.items()}, int(version or 0))


def _padded(chunk: np.ndarray, batch_size: int) -> np.ndarray:
    """`chunk` filled up to `batch_size` with copies of its last item (a valid input, unlike zeros for a model
    that divides by an area, say)."""
    if len(chunk) == batch_size:
        return np.ascontiguousarray(chunk)
    return np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
