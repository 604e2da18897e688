"""Fixed-shape model calls (sipec/serving/batching.py): an item's result must not depend on what it was batched with.

The cause of run-to-run differences, reproduced on demand: the same crop through the same SavedModel gives other
last bits at another batch size (oneDNN/Eigen choose kernels by shape), and which crops share a call is decided
by arrival in a stream. The fix, checked here: every call has exactly `batch_size` items (padded), so any split of
the same items gives bit-identical outputs, in the backend helper and through the services.
"""

from __future__ import annotations

import numpy as np
import pytest

from sipec.serving.backends import ModelBackend, Prediction
from sipec.serving.batching import check_batch_size, predict_fixed
from sipec.serving.errors import Unavailable
from tests.tiny_models import export_tiny_idnet, export_tiny_posenet


class RecordingBackend(ModelBackend):
    """Doubles its input; records the batch size of every call; `versions` gives each call's model version."""

    kind = "test"

    def __init__(self, versions: list[int] | None = None) -> None:
        super().__init__("double")
        self.calls: list[int] = []
        self.versions = versions

    def predict(self, inputs, output_filter=None, signature=None) -> Prediction:
        x = inputs["x"]
        self.calls.append(len(x))
        version = self.versions[len(self.calls) - 1] if self.versions else 1
        return Prediction({"y": x * 2, "n": np.full(len(x), len(x))}, version)

    def metadata(self):
        raise NotImplementedError

    def ready(self) -> bool:
        return True


def test_every_call_has_exactly_the_batch_size_and_padding_is_dropped():
    b = RecordingBackend()
    x = np.arange(19, dtype=np.float32).reshape(19, 1)
    out = predict_fixed(b, {"x": x}, 8)
    assert b.calls == [8, 8, 8]
    assert out.outputs["y"].shape == (19, 1) and np.array_equal(out.outputs["y"], x * 2)
    assert out.model_version == 1
    seen = []
    predict_fixed(b, {"x": x[:3]}, 8, on_call=lambda k, sec: seen.append((k, sec)))
    assert b.calls[-1] == 8 and [k for k, _ in seen] == [3]   # metrics see the real items, the model a full batch
    assert seen[0][1] > 0                                      # and the seconds the backend took (duty cycle)
    b.calls.clear()
    assert predict_fixed(b, {"x": x}, 0).outputs["n"].tolist() == [19] * 19 and b.calls == [19]   # 0: no padding


def test_bad_inputs_and_a_version_change_between_calls():
    with pytest.raises(ValueError, match="first dimension"):
        predict_fixed(RecordingBackend(), {"x": np.zeros((3, 1)), "z": np.zeros((4, 1))}, 8)
    with pytest.raises(ValueError, match="no items"):
        predict_fixed(RecordingBackend(), {"x": np.zeros((0, 1))}, 8)
    with pytest.raises(Unavailable, match=r"changed version during one request \(1 -> 2\)"):
        predict_fixed(RecordingBackend(versions=[1, 2]), {"x": np.zeros((9, 1))}, 8)
    for bad in (-1, 1025, 2.0, True):
        with pytest.raises(ValueError, match="--batch-size"):
            check_batch_size(bad)
    assert check_batch_size(0) == 0 and check_batch_size(32) == 32


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    from sipec.serving.backends import LocalBackend

    repo = tmp_path_factory.mktemp("batching")
    export_tiny_posenet(repo, size=64, seed=1)
    export_tiny_idnet(repo, t=1, size=32, crop_px=32, seed=1)
    out = {name: LocalBackend(repo, name) for name in ("posenet", "idnet")}
    yield out
    for b in out.values():
        b.close()


def _items(name: str, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    shape = {"posenet": (n, 64, 64, 3), "idnet": (n, 3, 32, 32, 3)}[name]
    key = {"posenet": "crop", "idnet": "crops"}[name]
    return {key: rng.integers(0, 256, shape, dtype=np.uint8)}


def _split(backend, inputs, sizes, fixed: int | None) -> dict[str, np.ndarray]:
    """Outputs of the items called in consecutive groups of `sizes` (a stream's read-ahead batches)."""
    parts, start = [], 0
    for k in sizes:
        chunk = {name: v[start:start + k] for name, v in inputs.items()}
        parts.append(predict_fixed(backend, chunk, fixed).outputs if fixed else backend.predict(chunk).outputs)
        start += k
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def test_the_cause_batch_composition_changes_the_last_bits_of_unpadded_calls(backends):
    """Reproduces the run-to-run difference: the same 16 items, called as one batch or in the splits a stream's
    arrival can make, give other last bits in some outputs of the exported models (TensorFlow on this CPU)."""
    differs = []
    for name, backend in backends.items():
        inputs = _items(name, 16)
        whole = _split(backend, inputs, [16], None)
        for sizes in ([1] * 16, [3, 3, 3, 3, 3, 1], [5, 5, 5, 1]):
            parts = _split(backend, inputs, sizes, None)
            differs += [(name, sizes[0]) for k in whole if not np.array_equal(whole[k], parts[k])]
    if not differs:   # the cause depends on the CPU and the TensorFlow build, not on this project's code
        pytest.skip("this CPU and TensorFlow build give bit-identical outputs at every batch size tried: the "
                    "difference that fixed-size calls remove does not occur here")


@pytest.mark.parametrize("name", ["posenet", "idnet"])
def test_fixed_size_calls_give_bit_identical_outputs_for_any_split(backends, name):
    backend = backends[name]
    inputs = _items(name, 16)
    whole = _split(backend, inputs, [16], 8)
    for sizes in ([1] * 16, [3, 3, 3, 3, 3, 1], [5, 5, 5, 1], [9, 7], [2, 14]):
        parts = _split(backend, inputs, sizes, 8)
        for k in whole:
            assert np.array_equal(whole[k], parts[k]), (name, sizes, k)


def test_posenet_service_gives_a_crop_the_same_keypoints_alone_or_among_others(backends):
    """Through the servicer: one crop per request or all in one request, the keypoints are bit-identical."""
    from services.posenet.service import PoseNetServicer
    from sipec.api.convert import image_to_proto
    from sipec.v1 import posenet_pb2

    servicer = PoseNetServicer(backends["posenet"])
    crops = _items("posenet", 11)["crop"]

    def keypoints(request) -> list[list[tuple[float, float, float]]]:
        resp = servicer.EstimatePose(request, None)
        return [[(k.x, k.y, k.confidence) for k in p.keypoints] for p in resp.poses]

    together = keypoints(posenet_pb2.PoseRequest(crops=[posenet_pb2.PoseCrop(crop=image_to_proto(c), key=str(i))
                                                        for i, c in enumerate(crops)]))
    alone = [keypoints(posenet_pb2.PoseRequest(crops=[posenet_pb2.PoseCrop(crop=image_to_proto(c), key="0")]))[0]
             for c in crops]
    assert together == alone
    assert servicer.model_info().batch_size == 8
