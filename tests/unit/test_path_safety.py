"""Model names never leave the repository: the repository and the model server refuse path-like names."""

from __future__ import annotations

import grpc
import pytest

from sipec.serving.errors import InvalidInput, NotFound
from sipec.serving.repository import ModelRepository

BAD_NAMES = ["../x", "a/b", "..", "/etc", "..\\x", "x/../../y", "", ".", "a\x00b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_repository_refuses_path_like_model_names(tmp_path, name):
    (tmp_path / "repo").mkdir()
    (tmp_path / "x" / "1").mkdir(parents=True)             # a model outside the repository
    (tmp_path / "x" / "1" / "saved_model.pb").write_bytes(b"")
    repo = ModelRepository(tmp_path / "repo")
    for call in (lambda: repo.versions(name), lambda: repo.get(name), lambda: repo.next_version(name),
                 lambda: repo.export(None, name, {})):
        with pytest.raises(InvalidInput, match="invalid model name") as info:
            call()
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert repo.models() == []


def test_repository_get_unknown_name_is_not_found(tmp_path):
    with pytest.raises(NotFound) as info:
        ModelRepository(tmp_path).get("nope")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
