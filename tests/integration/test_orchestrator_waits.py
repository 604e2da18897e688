"""`sipec serve orchestrator --services`: it starts before its modules, reports NOT_SERVING and answers UNAVAILABLE
(naming what it waits for) until they answer, then turns SERVING by itself -- no crash loop in a cluster where the
orchestrator's pod starts first."""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest

from sipec.serving.client import health_status, make_channel, wait_for_serving
from sipec.serving.process import spawn_sipec
from sipec.v1 import common_pb2, orchestrator_pb2_grpc, segnet_pb2_grpc


class FakeSegNet(segnet_pb2_grpc.SegNetServicer):
    def GetModelInfo(self, request, context):
        return common_pb2.ModelInfo(module="segnet", version=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_orchestrator_waits_for_its_modules_then_serves(tmp_path):
    port = _free_port()
    (tmp_path / "endpoints.yaml").write_text(f"segnet: 127.0.0.1:{port}\n")
    (tmp_path / "pipeline.yaml").write_text("modules: [segnet]\n")
    proc, orch_port = spawn_sipec(["serve", "orchestrator", "--services", str(tmp_path / "endpoints.yaml"),
                                   "--config", str(tmp_path / "pipeline.yaml"), "--port", "0"])
    server = None
    try:
        ch = make_channel(f"127.0.0.1:{orch_port}")
        stub = orchestrator_pb2_grpc.PipelineStub(ch)
        assert health_status(ch, "liveness") == "SERVING"             # the process is up ...
        assert health_status(ch, "sipec.v1.Pipeline") == "NOT_SERVING"  # ... not ready
        with pytest.raises(grpc.RpcError) as waiting:
            stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
        assert waiting.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "waiting for its modules" in waiting.value.details() and "segnet" in waiting.value.details()
        assert proc.poll() is None                                       # still running, not crashed
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        segnet_pb2_grpc.add_SegNetServicer_to_server(FakeSegNet(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        wait_for_serving(ch, "sipec.v1.Pipeline", timeout_s=60)
        info = stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
        assert '"segnet": 3' in info.metadata_json
    finally:
        proc.terminate()
        proc.wait(30)
        if server is not None:
            server.stop(0)


def test_a_bad_endpoints_file_still_fails_at_once(tmp_path):
    (tmp_path / "endpoints.yaml").write_text("tracker: 127.0.0.1:1\n")
    (tmp_path / "pipeline.yaml").write_text("modules: [segnet]\n")
    with pytest.raises(RuntimeError, match="no endpoint for module"):
        spawn_sipec(["serve", "orchestrator", "--services", str(tmp_path / "endpoints.yaml"),
                     "--config", str(tmp_path / "pipeline.yaml"), "--port", "0"])
