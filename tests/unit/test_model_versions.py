"""Pinned model versions (#20): TF Serving's `specific` policy read from models.config, a model server and a
module backend that serve and ask for exactly that version, and an analysis that refuses a version change."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.pipeline import ModelVersionChanged, VideoPipeline
from sipec.serving.backends import LocalBackend, TFServingBackend
from sipec.serving.errors import NotFound
from sipec.serving.model_config import LATEST, served_versions
from sipec.serving.model_server import ModelServer
from sipec.serving.models import ModelManager
from sipec.serving.repository import ModelRepository
from sipec.serving.runtime import ServerConfig
from tests.tiny_models import export_classifier

CONFIG = """model_config_list {
  config { name: "tiny" base_path: "/models/tiny" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 } } }
  config { name: "other" base_path: "/models/other" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 1 } } }
}"""


def test_served_versions_reads_tf_servings_policies():
    assert served_versions(CONFIG) == {"tiny": 1, "other": LATEST}
    with pytest.raises(ValueError, match="exactly one version"):
        served_versions(CONFIG.replace("specific { versions: 1 }", "specific { versions: 1 versions: 2 }"))
    with pytest.raises(ValueError, match="'all' is not supported"):
        served_versions(CONFIG.replace("specific { versions: 1 }", "all {}"))
    with pytest.raises(ValueError, match="models.config"):
        served_versions("model_config_list { nonsense: 1 }")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    export_classifier(root, "tiny", seed=0)            # version 1
    export_classifier(root, "tiny", seed=1)            # version 2
    return root


def test_manager_serves_the_pinned_version_not_the_newest(repo):
    manager = ModelManager(ModelRepository(repo), ["tiny"], poll_s=0, pinned={"tiny": 1})
    manager.start()
    assert manager.get("tiny").version.version == 1
    missing = ModelManager(ModelRepository(repo), ["tiny"], poll_s=0, pinned={"tiny": 7})
    missing.start()
    assert not missing.ready() and "version 7 of model 'tiny' (pinned)" in missing.state("tiny").error
    backend = LocalBackend(repo, "tiny", poll_s=0, version=1)
    try:
        assert backend.metadata().version == 1
    finally:
        backend.close()


def test_tfserving_backend_asks_for_its_version(repo):
    server = ModelServer(repo, ServerConfig(port=0, host="127.0.0.1", grace_s=0), names=["tiny"], poll_s=0,
                         pinned={"tiny": 1})
    port = server.start()
    x = np.zeros((1, 16, 16, 3), np.uint8)
    try:
        pinned = TFServingBackend(f"127.0.0.1:{port}", "tiny", version=1)
        assert pinned.predict({"image": x}).model_version == 1 and pinned.metadata().version == 1
        assert pinned.ready() and "version 1" in pinned.describe()
        other = TFServingBackend(f"127.0.0.1:{port}", "tiny", version=2)
        with pytest.raises(NotFound, match="version 2"):
            other.predict({"image": x})
        assert not other.ready()
        for b in (pinned, other):
            b.close()
    finally:
        server.stop(0)


def test_an_answer_from_another_model_version_stops_the_analysis():
    pipeline = VideoPipeline.__new__(VideoPipeline)
    pipeline.m = SimpleNamespace(info={"segnet": SimpleNamespace(version=1), "idnet": SimpleNamespace(version=0)})
    pipeline._check_version("segnet", 1, 5)
    pipeline._check_version("segnet", 0, 5)           # an error answer carries no version
    pipeline._check_version("idnet", 3, 5)            # a model without versions (0) is not checked
    with pytest.raises(ModelVersionChanged, match="segnet: model version 2 answered frame 9, but this analysis "
                                                  "started with version 1"):
        pipeline._check_version("segnet", 2, 9)
