"""Training of SegNet's Mask R-CNN on letterboxed data, and its export to a model repository.

Transfer learning in stages as in the paper: with a pretrained backbone (`--weights imagenet` or a file),
the heads (FPN, RPN, box, mask) train first with the backbone frozen (a third of the epochs), then every
layer. With a random backbone (`--weights none`) all layers train from the start, as freezing random
features would only waste epochs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.segnet.data import SegData


@dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def train_model(data: SegData, config: Any, epochs: int, batch_size: int = 4, seed: int = 0,
                backbone_weights: str | None = None, weights_file: str | None = None, lr: float = 1e-3,
                augment_data: bool = True, log: Callable[[str], None] | None = print,
                max_seconds: float | None = None) -> TrainResult:
    """Train a Mask R-CNN (`config`, a MaskRCNNConfig) on `data`; returns the model and per-epoch mean losses.

    `max_seconds` stops at the first step after it (for time-boxed CPU runs).
    """
    import keras
    import tensorflow as tf

    from services.segnet.data import augment, boxes_from_masks
    from services.segnet.losses import compute_losses
    from services.segnet.model import build_model

    if len(data) == 0:
        raise ValueError("no training images")
    keras.utils.set_random_seed(seed)
    model = build_model(config, backbone_weights)
    if weights_file:
        model.load_weights(weights_file)
    pretrained = bool(backbone_weights or weights_file)
    backbone_ids = {id(v) for v in model.backbone.trainable_variables}
    head_vars = [v for v in model.trainable_variables if id(v) not in backbone_ids]
    all_vars = list(model.trainable_variables)
    optimizer = keras.optimizers.Adam(lr, clipnorm=5.0)
    optimizer.build(all_vars)

    def make_step(variables: list[Any], backbone_training: bool) -> Callable[..., Any]:
        @tf.function(reduce_retracing=True)
        def step(images: tf.Tensor, masks: tf.Tensor, classes: tf.Tensor) -> dict[str, tf.Tensor]:
            if augment_data:
                images, masks = augment(images, masks)
            boxes = boxes_from_masks(masks)
            area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
            cls = tf.where(area > 0, classes, 0)
            with tf.GradientTape() as tape:
                losses = compute_losses(model, images, boxes, cls, masks, training=backbone_training)
            grads = tape.gradient(losses["loss"], variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return losses
        return step

    stage1_epochs = math.ceil(epochs / 3) if pretrained and epochs > 1 else 0
    heads_step = make_step(head_vars, backbone_training=False) if stage1_epochs else None
    all_step = make_step(all_vars, backbone_training=True)
    rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {}
    started = time.time()
    for epoch in range(epochs):
        step = heads_step if epoch < stage1_epochs else all_step
        stage = "heads" if epoch < stage1_epochs else "all"
        sums: dict[str, float] = {}
        steps = 0
        out_of_time = False
        for idx in _batches(len(data), batch_size, rng):
            if max_seconds is not None and time.time() - started > max_seconds:
                out_of_time = True
                break
            out = step(tf.constant(data.images[idx]), tf.constant(data.masks[idx], tf.float32),
                       tf.constant(data.classes[idx]))
            steps += 1
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        for k, v in sums.items():
            history.setdefault(k, []).append(v / steps)
        if log and steps:
            log(f"epoch {epoch + 1}/{epochs} ({stage}, {steps} steps) "
                + " ".join(f"{k} {v[-1]:.3f}" for k, v in history.items()) + f"  {time.time() - started:.0f}s")
        if out_of_time:
            if log:
                log(f"stopped in epoch {epoch + 1}: time limit ({max_seconds:.0f}s) reached")
            break
    return TrainResult(model, history, time.time() - started)


def export_model(model: Any, repo: Path, name: str, class_names: list[str], training: dict[str, Any],
                 version: int | None = None) -> Any:
    """Export the detection graph (uint8 image input, final detections out) with SegNet's metadata."""
    import tensorflow as tf

    from sipec.serving.repository import ModelRepository

    c = model.config
    meta = {
        "module": "segnet",
        "architecture": f"Mask R-CNN ({c.backbone} + FPN)",
        "input": {"height": c.image_size, "width": c.image_size, "channels": 3, "dtype": "uint8",
                  "resize": "letterbox: scale the longer side to the input size, pad bottom/right with zeros"},
        "class_names": list(class_names),
        "outputs": {"boxes": "(B,D,4) x1,y1,x2,y2 input pixels", "scores": "(B,D)",
                    "classes": "(B,D) index into class_names", "masks": "(B,D,M,M) probabilities over the box",
                    "num_detections": "(B,)"},
        "max_detections": c.max_detections,
        "mask_size": c.mask_size,
        "config": c.to_dict(),
        "training": training,
    }

    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return model.detect(image)

    return ModelRepository(repo).export(model, name, meta, version=version, serve_fn=serve,
                                        input_signature=model.serving_signature())
