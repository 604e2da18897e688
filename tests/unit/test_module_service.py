"""ModuleService: GetModelInfo from model metadata, health that follows the backend."""

from __future__ import annotations

import json

import pytest

from sipec.serving.backends import LocalBackend
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
