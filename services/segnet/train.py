"""Training of SegNet's Mask R-CNN, and its export to a model repository.

Transfer learning in stages, as Mask R-CNN and SIPEC train it: with a pretrained backbone (``--weights
imagenet`` or a weights file) the heads (FPN, RPN, box, class and mask heads) train first with the backbone
frozen, then backbone stages 4 and 5 join, then every layer (a third of the epochs each, or ``--stages``).
With a random backbone (``--weights none``) every layer trains from the start: frozen random features
would only waste the epochs.

The learning rate follows a cosine from ``lr`` down to 2 % of it after a short warm-up; with a time
limit the schedule runs on whichever is further along, steps or time, so a time-boxed run still ends
with small steps.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.segnet.augment import AugmentConfig
from services.segnet.backbones import TRAINABLE_CHOICES
from services.segnet.config import MaskRCNNConfig
from services.segnet.data import SegData

WEIGHTS_ASSET = "segnet.weights.h5"
WARMUP_STEPS = 50
MIN_LR_FRACTION = 0.02
DEFAULT_AUGMENT = AugmentConfig()


@dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    stages: list[tuple[str, int]] = field(default_factory=list)


def parse_stages(text: str | None, epochs: int, pretrained: bool) -> list[tuple[str, int]]:
    """``"heads:5,4+:5,all:10"`` -> [("heads", 5), ...]; None gives the default plan for ``epochs``."""
    if not text:
        if not pretrained or epochs < 3:
            return [("all", epochs)]
        first = epochs // 3
        return [("heads", first), ("4+", first), ("all", epochs - 2 * first)]
    plan = []
    for part in text.split(","):
        name, _, count = part.strip().partition(":")
        if name not in TRAINABLE_CHOICES or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"stage {part.strip()!r} must be LAYERS:EPOCHS with LAYERS one of "
                             f"{', '.join(TRAINABLE_CHOICES)} and EPOCHS >= 1, e.g. heads:5,4+:5,all:10")
        plan.append((name, int(count)))
    return plan


def learning_rate(base: float, step: int, total_steps: int, elapsed: float, max_seconds: float | None) -> float:
    """Warm-up, then cosine decay over the further along of steps and time."""
    progress = step / max(total_steps, 1)
    if max_seconds:
        progress = max(progress, elapsed / max_seconds)
    progress = min(progress, 1.0)
    warm = min(1.0, (step + 1) / max(1, min(WARMUP_STEPS, total_steps // 10)))
    return base * warm * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def load_weights_file(model: Any, path: str) -> str:
    """Load a whole-model (e.g. a previous SegNet's assets/segnet.weights.h5) or a backbone weights file.

    Returns "model" or "backbone"; ValueError names the file when it fits neither.
    """
    try:
        model.load_weights(path)
        return "model"
    except Exception as first:  # noqa: BLE001 - try the other layout before giving up
        try:
            model.backbone_model.load_weights(path)
            return "backbone"
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"--weights {path}: fits neither this network ({first}) nor its backbone "
                             f"({exc})") from exc


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled pass over n items in full batches (the last one topped up from the start)."""
    bs = min(batch_size, n)
    order = rng.permutation(n)
    steps = math.ceil(n / bs)
    order = np.concatenate([order, order[:steps * bs - n]])
    return [order[i * bs:(i + 1) * bs] for i in range(steps)]


def train_model(data: SegData, config: MaskRCNNConfig, epochs: int, batch_size: int = 4, seed: int = 0,
                weights: str | None = None, lr: float = 1e-3, augment: AugmentConfig | None = DEFAULT_AUGMENT,
                stages: str | None = None, log: Callable[[str], None] | None = print,
                max_seconds: float | None = None) -> TrainResult:
    """Train a Mask R-CNN on `data`; returns the model and the per-epoch mean losses.

    ``weights``: None (random), "imagenet" or a weights file (see :func:`load_weights_file`).
    ``max_seconds`` stops at the first step after it (for time-boxed CPU runs).
    """
    import keras
    import tensorflow as tf

    from services.segnet.augment import augment as augment_batch
    from services.segnet.augment import boxes_from_masks
    from services.segnet.model import MaskRCNN

    if len(data) == 0:
        raise ValueError("no training images")
    if data.input_size != (config.image_height, config.image_width):
        raise ValueError(f"data are letterboxed to {data.input_size}, the network takes "
                         f"{(config.image_height, config.image_width)}")
    plan = parse_stages(stages, epochs, pretrained=weights is not None)
    keras.utils.set_random_seed(seed)
    model = MaskRCNN(config, weights="imagenet" if weights == "imagenet" else None).build_for_input()
    if weights not in (None, "imagenet"):
        loaded = load_weights_file(model, weights)
        if log:
            log(f"segnet: initialised the {'whole network' if loaded == 'model' else 'backbone'} from {weights}")
    model.set_trainable_layers("all")
    optimizer = keras.optimizers.Adam(lr, clipnorm=5.0)
    optimizer.build(model.trainable_variables)

    def make_step(variables: list[Any]) -> Callable[..., Any]:
        @tf.function(reduce_retracing=True)
        def step(images: tf.Tensor, masks: tf.Tensor, classes: tf.Tensor) -> dict[str, tf.Tensor]:
            if augment is not None:
                images, masks = augment_batch(images, masks, augment)
            boxes = boxes_from_masks(masks)
            area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
            batch = {"image": images, "gt_boxes": boxes, "gt_classes": tf.where(area > 0, classes, 0),
                     "gt_masks": masks}
            with tf.GradientTape() as tape:
                losses = model.compute_losses(batch, training=True)
                total = tf.add_n(list(losses.values()))
            grads = tape.gradient(total, variables)
            optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables, strict=True) if g is not None])
            return {**losses, "loss": total}
        return step

    rng = np.random.default_rng(seed)
    steps_per_epoch = len(_epoch_batches(len(data), batch_size, rng))
    total_steps = steps_per_epoch * sum(e for _, e in plan)
    history: dict[str, list[float]] = {}
    started = time.time()
    step_count = 0
    epoch = 0
    out_of_time = False
    for layers, stage_epochs in plan:
        model.set_trainable_layers(layers)
        step = make_step(list(model.trainable_variables))
        for _ in range(stage_epochs):
            epoch += 1
            sums: dict[str, float] = {}
            n = 0
            for idx in _epoch_batches(len(data), batch_size, rng):
                elapsed = time.time() - started
                if max_seconds is not None and elapsed > max_seconds:
                    out_of_time = True
                    break
                optimizer.learning_rate.assign(learning_rate(lr, step_count, total_steps, elapsed, max_seconds))
                out = step(tf.constant(data.images[idx]), tf.constant(data.masks[idx], tf.float32),
                           tf.constant(data.classes[idx]))
                step_count += 1
                n += 1
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            if n:
                for k, v in sums.items():
                    history.setdefault(k, []).append(v / n)
                if log:
                    log(f"epoch {epoch} ({layers}, {n} steps, lr {float(optimizer.learning_rate.numpy()):.2e}) "
                        + " ".join(f"{k} {v[-1]:.3f}" for k, v in history.items())
                        + f"  {time.time() - started:.0f}s")
            if out_of_time:
                break
        if out_of_time:
            if log:
                log(f"segnet: stopped in epoch {epoch}: time limit of {max_seconds:.0f}s reached")
            break
    model.set_trainable_layers("all")
    return TrainResult(model, history, time.time() - started, step_count, plan)


def model_metadata(config: MaskRCNNConfig, training: dict[str, Any]) -> dict[str, Any]:
    """assets/sipec.json of an exported SegNet model."""
    return {
        "module": "segnet",
        "architecture": config.architecture,
        "input": {"height": config.image_height, "width": config.image_width, "channels": 3, "dtype": "uint8",
                  "resize": "letterbox: scale to fit keeping the aspect ratio, pad bottom/right with zeros"},
        "class_names": list(config.class_names),
        "outputs": {"boxes": "(B,D,4) float32 x1,y1,x2,y2 in input pixels", "scores": "(B,D) float32",
                    "classes": "(B,D) int32 index into class_names",
                    "masks": "(B,D,M,M) float32 mask probabilities over each box", "num_detections": "(B,) int32"},
        "max_detections": config.max_detections,
        "mask_size": config.mask_size,
        "default_min_score": config.default_min_score,
        "config": config.to_json(),
        "training": training,
    }


def export_model(model: Any, repo: Path, name: str, training: dict[str, Any], version: int | None = None) -> Any:
    """Export the detection graph (uint8 images in, final detections out) with SegNet's metadata, and the
    whole network's weights as assets/segnet.weights.h5 (for ``--weights`` fine-tuning). Returns the
    ModelVersion."""
    import tensorflow as tf

    from sipec.serving.repository import ModelRepository

    c = model.config
    spec = tf.TensorSpec([None, c.image_height, c.image_width, 3], tf.uint8, name="image")

    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return model.detect(image)

    mv = ModelRepository(repo).export(model, name, model_metadata(c, training), version=version, serve_fn=serve,
                                      input_signature=[spec])
    with warnings.catch_warnings():   # Keras variables' __array__ predates numpy 2's copy keyword (harmless)
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array__ implementation")
        model.save_weights(str(mv.path / "assets" / WEIGHTS_ASSET))
    return mv
