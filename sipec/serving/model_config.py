"""TF Serving's model config file (``--model_config_file``: a ModelServerConfig text protobuf), read the way TF
Serving reads it, for `sipec serve model-server --model-config-file` and the cluster checks.

What SIPEC uses of it: the models served and each one's version policy, ``latest { num_versions: 1 }`` (the
newest version, followed as new ones appear) or ``specific { versions: N }`` (exactly version N: a rollout to
another version is a change of this file, which `kubectl rollout undo` reverses).
"""

from __future__ import annotations

from typing import Any

LATEST = 0   # the version policy "latest": the newest version


def parse_model_config(text: str, source: str = "models.config") -> Any:
    """The ModelServerConfig message; ValueError naming ``source`` and the problem when it does not parse."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    return message


def served_versions(text: str, source: str = "models.config") -> dict[str, int]:
    """model name -> the version it pins, or LATEST (0). ValueError for a policy SIPEC does not serve: ``all``,
    several specific versions, or latest with more than one version."""
    config = parse_model_config(text, source)
    out: dict[str, int] = {}
    for model in config.model_config_list.config:
        policy = model.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "specific":
            versions = list(policy.specific.versions)
            if len(versions) != 1 or versions[0] < 1:
                raise ValueError(f"{source}: model {model.name!r}: specific needs exactly one version >= 1, "
                                 f"not {versions}")
            out[model.name] = int(versions[0])
        elif which in (None, "latest"):
            if which == "latest" and policy.latest.num_versions > 1:
                raise ValueError(f"{source}: model {model.name!r}: latest with num_versions "
                                 f"{policy.latest.num_versions}; serve one version (num_versions: 1)")
            out[model.name] = LATEST
        else:
            raise ValueError(f"{source}: model {model.name!r}: version policy {which!r} is not supported; use "
                             "latest { num_versions: 1 } or specific { versions: N }")
    if not out:
        raise ValueError(f"{source}: no model in model_config_list")
    return out
