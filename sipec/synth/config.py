"""Settings of one synthetic video, checked before anything is generated."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from sipec.synth.appearance import MAX_ANIMALS
from sipec.synth.arena import TOP_FLOOR_WIDTH

CAMERA_MODES: tuple[str, ...] = ("top", "perspective")
MIN_WIDTH, MIN_HEIGHT = 64, 48
MAX_SIDE = 4096


@dataclass(frozen=True)
class SynthConfig:
    animals: int = 4
    frames: int = 1000
    seed: int = 0
    # the animals' looks (fur shade, marking, size) come from this seed when given, the rest (arena, motion,
    # rendering) from `seed`: two videos with the same appearance_seed and different seeds show the same
    # individuals in different recordings (held-out videos for IdNet)
    appearance_seed: int | None = None
    width: int = 640
    height: int = 480
    camera: str = "top"
    fps: float = 30.0
    objects: bool = True
    identity_names: tuple[str, ...] | None = None
    noise_std: float = 3.0  # grey levels, gaussian sensor noise
    # width of the cage floor in metres (top camera; the depth follows the aspect ratio): a wider floor at the
    # same image size shows smaller animals with more room between them
    floor_width: float = TOP_FLOOR_WIDTH
    # how often an animal that ends a bout seeks out another one to groom it, relative to the default (1): 0 for
    # animals that never approach each other (they still meet when their paths cross), as fish or flies
    sociality: float = 1.0
    lighting_drift: float = 0.06  # relative amplitude of the slow brightness change

    def validate(self) -> None:
        """Raise ValueError naming the setting and the problem."""
        if not 1 <= self.animals <= MAX_ANIMALS:
            raise ValueError(f"animals must be 1 to {MAX_ANIMALS}, not {self.animals}")
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, not {self.frames}")
        if self.camera not in CAMERA_MODES:
            raise ValueError(f"camera must be one of {', '.join(CAMERA_MODES)}, not {self.camera!r}")
        if not (MIN_WIDTH <= self.width <= MAX_SIDE and MIN_HEIGHT <= self.height <= MAX_SIDE):
            raise ValueError(f"size {self.width}x{self.height} is outside "
                             f"{MIN_WIDTH}x{MIN_HEIGHT} .. {MAX_SIDE}x{MAX_SIDE}")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"size {self.width}x{self.height}: width and height must be even (H.264 yuv420p)")
        if not 1.0 <= self.fps <= 240.0:
            raise ValueError(f"fps must be between 1 and 240, not {self.fps}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {self.seed}")
        if self.appearance_seed is not None and self.appearance_seed < 0:
            raise ValueError(f"appearance seed must be a non-negative integer, not {self.appearance_seed}")
        if self.identity_names is not None:
            names = list(self.identity_names)
            if len(names) != self.animals:
                raise ValueError(f"{len(names)} identity names given for {self.animals} animals")
            if len(set(names)) != len(names) or any(not re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in names):
                raise ValueError(f"identity names must be distinct and use only letters, digits, _ . -: {names}")
        if not 0.3 <= self.floor_width <= 3.0:
            raise ValueError(f"floor_width must be 0.3 to 3 metres, not {self.floor_width}")
        if self.floor_width != TOP_FLOOR_WIDTH and self.camera != "top":
            raise ValueError("floor_width applies to the top camera (the perspective room has its own size)")
        if not 0.0 <= self.sociality <= 5.0:
            raise ValueError(f"sociality must be 0 to 5, not {self.sociality}")
        if not 0.0 <= self.noise_std <= 50.0:
            raise ValueError(f"noise_std must be 0 to 50 grey levels, not {self.noise_std}")
        if not 0.0 <= self.lighting_drift <= 0.5:
            raise ValueError(f"lighting_drift must be 0 to 0.5, not {self.lighting_drift}")

    @property
    def names(self) -> list[str]:
        return list(self.identity_names) if self.identity_names else [f"animal_{i}" for i in range(self.animals)]

    def to_json(self) -> dict:
        out = asdict(self)
        out["identity_names"] = self.names
        return out


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); ValueError with the expected form otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 640x480")
    return int(m.group(1)), int(m.group(2))
