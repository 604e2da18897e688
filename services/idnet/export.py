"""Export IdNet's networks into a model repository (TF Serving layout) with the metadata the service reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.idnet.masking import MaskSettings
from services.idnet.model import INPUT_NAME, OUTPUT_NAME, NetworkConfig
from sipec.serving.repository import ModelRepository, ModelVersion


def idnet_metadata(config: NetworkConfig, identity_names: list[str], masking: MaskSettings,
                   training: dict[str, Any] | None = None) -> dict[str, Any]:
    """assets/sipec.json of an IdNet model: identities, T, crop and mask settings, how it was trained."""
    arch = f"{config.backbone}" + (f"+bigru3-t{config.t}" if config.t else "-frame")
    return {
        "module": "idnet",
        "architecture": arch,
        "input": {"height": config.input_size, "width": config.input_size, "channels": 3,
                  "sequence_length": config.sequence_length},
        "class_names": list(identity_names),
        "t": config.t,
        "backbone": config.backbone,
        "masking": masking.to_json(),
        "inputs": {INPUT_NAME: "uint8 (B, 2T+1, S, S, 3), masks already applied (services.idnet.masking)"},
        "outputs": {OUTPUT_NAME: "float32 (B, identities) softmax"},
        "training": training or {},
    }


def export_idnet(model: Any, repo: str | Path, name: str, config: NetworkConfig, identity_names: list[str],
                 masking: MaskSettings, training: dict[str, Any] | None = None,
                 version: int | None = None) -> ModelVersion:
    """Write `model` (uint8 crops (B, 2T+1, S, S, 3) -> probabilities) as a new version of `name`."""
    import tensorflow as tf

    s = config.input_size
    spec = tf.TensorSpec([None, config.sequence_length, s, s, 3], tf.uint8, name=INPUT_NAME)

    def serve(crops: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: model(crops, training=False)}

    meta = idnet_metadata(config, identity_names, masking, training)
    return ModelRepository(repo).export(model, name, meta, version=version, serve_fn=serve, input_signature=[spec])
