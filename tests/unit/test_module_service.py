"""ModuleService: GetModelInfo from model metadata, health that follows the backend."""

from __future__ import annotations

import json

import pytest

from sipec.serving.backends import LocalBackend, ModelBackend
from sipec.serving.client import health_status, make_channel
from sipec.serving.errors import Unavailable
from sipec.serving.module import ModuleService
from sipec.serving.runtime import ServerConfig, ServiceRuntime
from tests.conftest import wait_until
from tests.tiny_models import CLASS_NAMES, export_classifier


class DemoModule(ModuleService):
    module = "demo"
    service_name = "sipec.v1.Demo"


def test_model_info_and_health_follow_the_backend(tmp_path):
    backend = LocalBackend(tmp_path, "tiny", poll_s=0.2)
    runtime = ServiceRuntime("demo", ServerConfig(port=0, host="127.0.0.1"))
    runtime.add_service(lambda s, srv: None, None, DemoModule.service_name)
    runtime.start()
    svc = DemoModule(backend, runtime)
    try:
        svc.watch_health(poll_s=0.1)
        channel = make_channel(f"127.0.0.1:{runtime.port}")
        assert health_status(channel, DemoModule.service_name) == "NOT_SERVING"
        with pytest.raises(Unavailable, match="not loaded"):
            svc.model_info()
        export_classifier(tmp_path, "tiny", seed=0)
        assert wait_until(lambda: health_status(channel, DemoModule.service_name) == "SERVING", timeout_s=30)
        info = svc.model_info()
        assert (info.module, info.model_name, info.version, info.backend) == ("demo", "tiny", 1, "local")
        assert (info.input_height, info.input_width) == (16, 16)
        assert list(info.class_names) == CLASS_NAMES and info.architecture == "tiny-cnn"
        assert json.loads(info.metadata_json)["training"] == {"seed": 0}
    finally:
        svc.close()
        runtime.stop(0)


class FlakyBackend(ModelBackend):
    """A backend whose readiness the test sets; `predict` fails as an unreachable TF Serving does."""

    kind = "fake"

    def __init__(self) -> None:
        super().__init__("flaky")
        self.is_ready = True

    def predict(self, inputs, output_filter=None, signature=None):
        self._notify_unavailable("Predict at fake:1: connection refused")
        raise Unavailable("Predict at fake:1: connection refused")

    def metadata(self):
        raise Unavailable("no metadata")

    def ready(self) -> bool:
        return self.is_ready


def _served(svc: ModuleService, poll_s: float):
    runtime = ServiceRuntime("demo", ServerConfig(port=0, host="127.0.0.1"))
    runtime.add_service(lambda s, srv: None, None, svc.service_name)
    runtime.start()
    svc.runtime = runtime
    svc.watch_health(poll_s=poll_s)
    return runtime, make_channel(f"127.0.0.1:{runtime.port}")


def test_a_failed_backend_call_turns_health_not_serving_at_once_and_a_poll_brings_it_back(caplog):
    backend = FlakyBackend()
    svc = DemoModule(backend)
    runtime, channel = _served(svc, poll_s=30.0)   # no poll during the test but the first one
    try:
        assert health_status(channel, DemoModule.service_name) == health_status(channel) == "SERVING"
        with pytest.raises(Unavailable):
            backend.predict({})
        assert health_status(channel, DemoModule.service_name) == health_status(channel) == "NOT_SERVING"
        assert "model backend fake model 'flaky' not ready: health NOT_SERVING (Predict at fake:1" in caplog.text
        svc._update_health()                         # what the next poll does
        assert health_status(channel) == "SERVING"
        backend.is_ready = False
        svc._update_health()
        assert health_status(channel, DemoModule.service_name) == "NOT_SERVING"
    finally:
        svc.close()
        runtime.stop(0)


def test_a_service_that_needs_no_model_stays_serving():
    class NoModel(DemoModule):
        health_follows_backend = False

    backend = FlakyBackend()
    backend.is_ready = False
    svc = NoModel(backend)
    runtime, channel = _served(svc, poll_s=0.05)
    try:
        with pytest.raises(Unavailable):
            backend.predict({})
        assert wait_until(lambda: health_status(channel) == "SERVING", timeout_s=5)
        assert health_status(channel, DemoModule.service_name) == "SERVING"
    finally:
        svc.close()
        runtime.stop(0)


def test_health_poll_interval_must_be_positive():
    svc = DemoModule(FlakyBackend(), ServiceRuntime("demo", ServerConfig(port=0, host="127.0.0.1")))
    with pytest.raises(ValueError, match="health poll interval"):
        svc.watch_health(poll_s=0)
