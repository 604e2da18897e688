"""`sipec serve model-server` as a real process, called with tensorflow-serving-api's own stubs."""

from __future__ import annotations

import shutil
import urllib.request

import grpc
import numpy as np
import pytest

from tests.conftest import ServerProcess, wait_until
from tests.tiny_models import CLASS_NAMES, export_classifier

READY = r"model-server: serving .* on port (\d+)(?:, metrics on (\d+))?"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    model, mv = export_classifier(root, "tiny", seed=0)
    return root, model


@pytest.fixture(scope="module")
def server(repo):
    root, _ = repo
    srv = ServerProcess(["serve", "model-server", "--model-repo", str(root), "--port", "0",
                         "--metrics-port", "0", "--poll-s", "0.3", "--max-message-mb", "1"], READY)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def address(server):
    return f"localhost:{server.match.group(1)}"


@pytest.fixture(scope="module")
def stub(address):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(address)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def _images(n: int = 4, size: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _request(name: str = "tiny", **inputs):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req


def test_health_serving_once_loaded(address):
    from sipec.serving.client import health_status, make_channel, wait_for_serving

    channel = make_channel(address)
    wait_for_serving(channel, "", timeout_s=60)
    assert health_status(channel, "tensorflow.serving.PredictionService") == "SERVING"
    assert health_status(channel, "tensorflow.serving.ModelService") == "SERVING"
    assert health_status(channel, "no.such.Service") == "SERVICE_UNKNOWN"


def test_predict_with_tf_serving_stub_equals_in_process(repo, stub):
    import tensorflow as tf

    _, model = repo
    images = _images()
    resp = stub.Predict(_request(image=images), timeout=30)
    assert resp.model_spec.name == "tiny" and resp.model_spec.version.value == 1
    served = {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}
    direct = {k: np.asarray(v) for k, v in model(images, training=False).items()}
    assert set(served) == {"probs", "features"}
    for k in served:
        np.testing.assert_allclose(served[k], direct[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["probs"].sum(axis=1), 1.0, rtol=1e-5)


def test_tfserving_backend_equals_local_backend(repo, address):
    from sipec.serving.backends import LocalBackend, TFServingBackend

    root, _ = repo
    images = _images(3, seed=7)
    local = LocalBackend(root, "tiny", poll_s=0)
    remote = TFServingBackend(address, "tiny")
    try:
        a = local.predict({"image": images})
        b = remote.predict({"image": images})
        assert a.model_version == b.model_version == 1
        for k in ("probs", "features"):
            np.testing.assert_allclose(a.outputs[k], b.outputs[k], rtol=1e-6, atol=1e-7)
        only = remote.predict({"image": images}, output_filter=["probs"])
        assert set(only.outputs) == {"probs"}
        # metadata: signature from GetModelMetadata, labels from the sipec_metadata signature
        ma, mb = local.metadata(), remote.metadata()
        assert mb.info["class_names"] == ma.info["class_names"] == CLASS_NAMES
        assert mb.inputs["image"].dtype == "uint8" and mb.inputs["image"].shape == (None, 16, 16, 3)
        assert ma.inputs == mb.inputs and set(mb.outputs) == {"probs", "features"}
        assert remote.ready() and local.ready()
    finally:
        local.close()
        remote.close()


def test_model_metadata_and_status(stub, address):
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
    )

    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "tiny"
    req.metadata_field.append("signature_def")
    resp = stub.GetModelMetadata(req, timeout=10)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigs)
    assert {"serving_default", "sipec_metadata"} <= set(sigs.signature_def)
    assert "image" in sigs.signature_def["serving_default"].inputs

    status_stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(address))
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "tiny"
    sresp = status_stub.GetModelStatus(sreq, timeout=10)
    assert [(s.version, s.state) for s in sresp.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def _code_and_details(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_bad_requests_get_clear_statuses_and_server_keeps_serving(stub):
    images = _images(2)
    cases = []
    cases.append(_code_and_details(lambda: stub.Predict(_request("nope", image=images), timeout=10)))
    assert cases[-1][0] == grpc.StatusCode.NOT_FOUND and "nope" in cases[-1][1]

    req = _request(image=images)
    req.model_spec.version.value = 7
    cases.append(_code_and_details(lambda: stub.Predict(req, timeout=10)))
    assert cases[-1][0] == grpc.StatusCode.NOT_FOUND and "version 7" in cases[-1][1]

    cases.append(_code_and_details(lambda: stub.Predict(_request(pixels=images), timeout=10)))
    assert cases[-1][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "'pixels'" in cases[-1][1] and "image" in cases[-1][1]

    cases.append(_code_and_details(lambda: stub.Predict(_request(image=images.astype(np.float32)), timeout=10)))
    assert cases[-1][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "'image'" in cases[-1][1] and "float32" in cases[-1][1] and "uint8" in cases[-1][1]

    cases.append(_code_and_details(lambda: stub.Predict(_request(image=images[:, :8]), timeout=10)))
    assert cases[-1][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "'image'" in cases[-1][1] and "(2, 8, 16, 3)" in cases[-1][1]

    big = np.zeros((8, 256, 256, 3), np.uint8)  # 1.5 MiB > the server's 1 MiB limit
    cases.append(_code_and_details(lambda: stub.Predict(_request(image=big), timeout=10)))
    assert cases[-1][0] == grpc.StatusCode.RESOURCE_EXHAUSTED

    req = _request(image=images)
    req.output_filter.append("logits")
    cases.append(_code_and_details(lambda: stub.Predict(req, timeout=10)))
    assert cases[-1][0] == grpc.StatusCode.INVALID_ARGUMENT and "'logits'" in cases[-1][1]

    # after every bad request the server still answers a good one
    resp = stub.Predict(_request(image=images), timeout=10)
    assert resp.outputs["probs"].tensor_shape.dim[0].size == 2


def test_metrics_endpoint_counts_calls_by_code(server, stub):
    stub.Predict(_request(image=_images(1)), timeout=10)
    port = server.match.group(2)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    ok = [line for line in body.splitlines()
          if line.startswith("sipec_grpc_requests_total") and 'method="Predict"' in line and 'code="OK"' in line]
    assert ok and float(ok[0].split()[-1]) >= 1
    assert any('code="NOT_FOUND"' in line for line in body.splitlines()
               if line.startswith("sipec_grpc_requests_total"))
    assert "sipec_grpc_request_seconds_bucket" in body and "sipec_batch_size_bucket" in body


def test_new_version_is_picked_up_without_restart(repo, stub):
    import tensorflow as tf

    root, _ = repo
    images = _images(2, seed=3)
    model2, mv2 = export_classifier(root, "tiny", seed=42)
    assert mv2.version == 2
    got = {}

    def served_v2() -> bool:
        resp = stub.Predict(_request(image=images), timeout=10)
        got["resp"] = resp
        return resp.model_spec.version.value == 2

    assert wait_until(served_v2, timeout_s=60, poll_s=0.3)
    served = tf.make_ndarray(got["resp"].outputs["probs"])
    np.testing.assert_allclose(served, np.asarray(model2(images, training=False)["probs"]), rtol=1e-5, atol=1e-6)
    # a broken newer version is skipped; version 2 stays served
    broken = root / "tiny" / "3"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a saved model")
    try:
        import time

        time.sleep(1.5)
        assert stub.Predict(_request(image=images), timeout=10).model_spec.version.value == 2
    finally:
        shutil.rmtree(broken)


def test_sigterm_stops_gracefully(repo):
    root, _ = repo
    srv = ServerProcess(["serve", "model-server", "--model-repo", str(root), "--port", "0", "--grace-s", "2"],
                        READY)
    assert srv.terminate(timeout_s=30) == 0
    assert "draining" in srv.text() and "stopped" in srv.text()
