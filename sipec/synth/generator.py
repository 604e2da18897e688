"""Frames with their ground truth, one at a time: the in-memory API of `sipec synth`.

>>> gen = SynthGenerator(SynthConfig(animals=2, frames=10, width=320, height=240))
>>> for frame in gen.frames():
...     frame.image            # HxWx3 uint8 RGB, exactly what goes to the encoder
...     frame.animals[0].mask  # HxW bool: the animal's visible pixels

Same config (seed included) gives identical frames and ground truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from sipec.geometry import Box, center_of_mass, encode_rle, mask_box
from sipec.synth.appearance import Appearance, make_appearances
from sipec.synth.arena import Arena, make_arena
from sipec.synth.camera import PinholeCamera
from sipec.synth.config import SynthConfig
from sipec.synth.render import AnimalRender, Renderer
from sipec.synth.scene import Scene


@dataclass
class AnimalTruth:
    identity: int
    name: str
    track_id: int
    behaviour: str
    partner: int  # identity of the social partner, -1 if none
    position: np.ndarray  # (3,) body centre, metres, world frame
    mask: np.ndarray  # HxW bool, visible pixels
    render: AnimalRender
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def area(self) -> int:
        if "area" not in self._cache:
            self._cache["area"] = int(np.count_nonzero(self.mask))
        return self._cache["area"]

    @property
    def box(self) -> Box | None:
        return mask_box(self.mask)

    @property
    def com(self) -> tuple[float, float] | None:
        return center_of_mass(self.mask) if self.area else None

    @property
    def rle(self) -> dict:
        if "rle" not in self._cache:
            self._cache["rle"] = encode_rle(self.mask)
        return self._cache["rle"]

    @property
    def keypoints(self) -> np.ndarray:
        """(K, 3): x, y, COCO visibility (2 visible, 1 occluded, 0 outside the image)."""
        return np.column_stack([self.render.keypoints, self.render.keypoint_v])

    @property
    def occluded_fraction(self) -> float:
        amodal = self.render.amodal_area
        return float(1.0 - self.area / amodal) if amodal else 1.0


@dataclass
class SynthFrame:
    index: int
    image: np.ndarray
    animals: list[AnimalTruth]
    owners: np.ndarray  # HxW uint8 label image (0 background, i+1 animal i, larger: cage objects)


class SynthGenerator:
    def __init__(self, config: SynthConfig) -> None:
        config.validate()
        self.config = config
        seeds = np.random.SeedSequence(config.seed).spawn(5)
        look_rng, arena_rng, motion_rng, render_rng, frame_rng = (np.random.default_rng(s) for s in seeds)
        if config.appearance_seed is not None:
            look_rng = np.random.default_rng(np.random.SeedSequence(config.appearance_seed).spawn(5)[0])
        self.looks: list[Appearance] = make_appearances(config.animals, look_rng, config.names)
        self.arena: Arena = make_arena(config.camera, config.width, config.height, arena_rng, config.objects,
                                       config.floor_width)
        self.scene = Scene(self.arena, self.looks, config.fps, motion_rng, config.sociality)
        self.renderer = Renderer(self.arena, self.looks, render_rng, config.noise_std, config.lighting_drift)
        self._frame_rng = frame_rng
        self._started = False

    @property
    def camera(self) -> PinholeCamera:
        return self.arena.camera

    def frames(self) -> Iterator[SynthFrame]:
        """Yield the config's frames in order (once per generator)."""
        if self._started:
            raise RuntimeError("SynthGenerator.frames() can run once; make a new generator to start again")
        self._started = True
        for index in range(self.config.frames):
            if index:
                self.scene.step()
            bodies = self.scene.bodies()
            rendered = self.renderer.render(bodies, index, self.config.fps, self._frame_rng)
            animals = []
            for i, (state, body) in enumerate(zip(self.scene.animals, bodies, strict=True)):
                animals.append(AnimalTruth(
                    identity=i, name=state.look.name, track_id=i, behaviour=state.label,
                    partner=state.labelled_partner, position=body.center.copy(),
                    mask=rendered.visible_mask(i), render=rendered.animals[i]))
            yield SynthFrame(index=index, image=rendered.image, animals=animals, owners=rendered.owners)
