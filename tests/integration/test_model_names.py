"""`sipec serve model-server` as a real process refuses path-like model names (INVALID_ARGUMENT) and unknown
ones (NOT_FOUND) in every RPC, and `--models` with a path-like name at start."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from tests.conftest import ROOT, ServerProcess

READY = r"model-server: serving .* on port (\d+)"


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    root = tmp_path_factory.mktemp("names")
    (root / "repo").mkdir()
    (root / "x" / "1").mkdir(parents=True)   # what "../x" would reach
    (root / "x" / "1" / "saved_model.pb").write_bytes(b"")
    srv = ServerProcess(["serve", "model-server", "--model-repo", str(root / "repo"), "--port", "0",
                         "--poll-s", "0"], READY)
    channel = grpc.insecure_channel(f"localhost:{srv.match.group(1)}")
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()
    srv.terminate()


def _calls(stubs, name: str) -> dict:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    predict, status = stubs
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta.model_spec.name = name
    st = get_model_status_pb2.GetModelStatusRequest()
    st.model_spec.name = name
    return {"Predict": lambda: predict.Predict(req, timeout=10),
            "GetModelMetadata": lambda: predict.GetModelMetadata(meta, timeout=10),
            "GetModelStatus": lambda: status.GetModelStatus(st, timeout=10)}


@pytest.mark.parametrize("name, code", [("../x", grpc.StatusCode.INVALID_ARGUMENT),
                                        ("a/b", grpc.StatusCode.INVALID_ARGUMENT),
                                        ("..", grpc.StatusCode.INVALID_ARGUMENT),
                                        ("", grpc.StatusCode.INVALID_ARGUMENT),
                                        ("x", grpc.StatusCode.NOT_FOUND)])
def test_model_names_are_checked_in_every_rpc(stubs, name, code):
    for rpc, call in _calls(stubs, name).items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == code, rpc
        assert repr(name) in info.value.details(), rpc


def test_models_flag_refuses_path_like_names(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sipec", "serve", "model-server", "--model-repo", str(tmp_path),
                           "--port", "0", "--models", "ok,../x"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "--models: invalid model name '../x'" in done.stderr
