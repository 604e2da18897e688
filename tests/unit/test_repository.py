"""Model repository layout, names, versions and export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sipec.serving.errors import InvalidInput, NotFound
from sipec.serving.models import LoadedModel, ModelManager
from sipec.serving.repository import ModelRepository, check_model_name
from tests.tiny_models import CLASS_NAMES, export_classifier


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "..", ".hidden", "a" * 200, "x\x00y", "a..b"])
def test_bad_model_names_are_refused(name):
    with pytest.raises(InvalidInput):
        check_model_name(name)


@pytest.mark.parametrize("name", ["segnet", "idnet-v2", "pose_mouse.1"])
def test_good_model_names(name):
    assert check_model_name(name) == name


def test_versions_ignore_incomplete_and_temporary_dirs(tmp_path):
    repo = ModelRepository(tmp_path)
    assert repo.models() == []
    for v in ("1", "3", "10"):
        (tmp_path / "m" / v).mkdir(parents=True)
        (tmp_path / "m" / v / "saved_model.pb").write_bytes(b"")
    (tmp_path / "m" / "4").mkdir()                  # no saved_model.pb yet
    (tmp_path / "m" / ".tmp-5-123").mkdir()          # being written
    (tmp_path / "m" / "0").mkdir()                   # versions start at 1
    (tmp_path / "m" / "0" / "saved_model.pb").write_bytes(b"")
    assert repo.versions("m") == [1, 3, 10]
    assert repo.get("m").version == 10
    assert repo.next_version("m") == 11
    with pytest.raises(NotFound, match=r"version 4 of model 'm'.*1, 3, 10"):
        repo.get("m", 4)
    with pytest.raises(NotFound, match=r"model 'x' not found.*models: m"):
        repo.get("x")


def test_export_writes_metadata_and_signatures(tmp_path):
    model, mv = export_classifier(tmp_path, "tiny", seed=0)
    assert mv.version == 1 and (mv.path / "saved_model.pb").is_file()
    meta = json.loads((mv.path / "assets" / "sipec.json").read_text())
    assert meta["class_names"] == CLASS_NAMES and meta["version"] == 1 and meta["model_name"] == "tiny"
    loaded = LoadedModel(mv)
    assert set(loaded.signatures) >= {"serving_default", "sipec_metadata"}
    assert loaded._graph_metadata() == meta  # the graph carries the same JSON as the asset
    info = loaded.signature_info["serving_default"]
    assert info.inputs["image"].dtype == "uint8" and info.inputs["image"].shape == (None, 16, 16, 3)
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    out = loaded.predict({"image": x})
    np.testing.assert_allclose(out["probs"], np.asarray(model(x)["probs"]), rtol=1e-5, atol=1e-6)
    with pytest.raises(FileExistsError):
        ModelRepository(tmp_path).export(model, "tiny", {}, version=1)
    assert not list((tmp_path / "tiny").glob(".tmp-*"))


def test_manager_reports_unavailable_then_serves(tmp_path):
    manager = ModelManager(ModelRepository(tmp_path), ["tiny"], poll_s=0)
    manager.start()
    assert not manager.ready()
    with pytest.raises(Exception, match="not loaded"):
        manager.get("tiny")
    export_classifier(tmp_path, "tiny", seed=0)
    manager.refresh()
    assert manager.ready() and manager.get("tiny").version.version == 1
    with pytest.raises(NotFound, match="version 2"):
        manager.get("tiny", 2)
    with pytest.raises(NotFound, match="'other'"):
        manager.get("other")
