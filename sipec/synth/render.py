"""Drawing a frame: animals and cage objects over the background, back to front, with their labels.

Every drawable writes into one uint8 "label" image, ``owner << 4 | part``: owner 0 is the background,
``i + 1`` animal i, ``OBJECT_OWNER0 + k`` cage object k. Painting back to front (by depth along the
camera axis, with animals under a cover drawn before it and animals on a platform after it) makes
``owner == i + 1`` exactly the visible pixels of animal i. Fills are aliased (no anti-aliasing), so
the colour image and the masks agree pixel for pixel before lighting, noise and video encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sipec.synth.animals import Body3D
from sipec.synth.appearance import MAX_ANIMALS, Appearance
from sipec.synth.arena import Arena
from sipec.synth.background import cv_points, make_background, vignette

PARTS: tuple[str, ...] = ("side", "body", "highlight", "marking", "head", "ear", "tail", "eye")
_PART = {name: i + 1 for i, name in enumerate(PARTS)}
OBJECT_OWNER0 = MAX_ANIMALS + 1
_SHIFT = 4
_NOISE_PAD = 32
_NOISE_BANK = 4
EAR_RGB = (176, 132, 128)
TAIL_RGB = (168, 132, 122)
EYE_RGB = (16, 12, 12)


@dataclass
class AnimalRender:
    """What the renderer knows about one animal in one frame."""

    keypoints: np.ndarray  # (K, 2) pixel coordinates (project convention)
    keypoint_v: np.ndarray  # (K,) COCO visibility: 2 visible, 1 occluded, 0 outside the image
    amodal: np.ndarray  # bool crop: the whole animal, as if nothing covered it
    amodal_origin: tuple[int, int]  # (x0, y0) of the crop in the image

    @property
    def amodal_area(self) -> int:
        return int(np.count_nonzero(self.amodal))

    def amodal_mask(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), dtype=bool)
        x0, y0 = self.amodal_origin
        out[y0:y0 + self.amodal.shape[0], x0:x0 + self.amodal.shape[1]] = self.amodal
        return out


@dataclass
class RenderedFrame:
    image: np.ndarray  # HxWx3 uint8 RGB
    owners: np.ndarray  # HxW uint8: 0 background, i + 1 animal i, >= OBJECT_OWNER0 objects
    animals: list[AnimalRender]

    def visible_mask(self, animal: int) -> np.ndarray:
        return self.owners == animal + 1


def _scaled(rgb: tuple[int, int, int] | np.ndarray, factor: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) * factor, 0, 255)


class Renderer:
    """Renders frames of one arena; the background, object polygons and noise are made once."""

    def __init__(self, arena: Arena, looks: list[Appearance], rng: np.random.Generator, noise_std: float = 3.0,
                 lighting_drift: float = 0.06) -> None:
        self.arena = arena
        self.camera = arena.camera
        self.width, self.height = self.camera.width, self.camera.height
        self.looks = looks
        self.background = make_background(arena, rng)
        self.vignette = vignette(self.width, self.height)
        self.palette = np.zeros((256, 3), dtype=np.uint8)
        self._object_draws: list[tuple[float, list[tuple[np.ndarray, int]], list[np.ndarray], int]] = []
        self._prepare_objects()
        # slow lighting drift: two sinusoids with random phases, plus a little flicker
        self.lighting_drift = lighting_drift
        self._light_phase = rng.uniform(0, 2 * np.pi, 2)
        self._light_period = rng.uniform([14.0, 5.0], [26.0, 9.0])
        noise = rng.normal(0.0, noise_std, size=(_NOISE_BANK, self.height + _NOISE_PAD, self.width + _NOISE_PAD, 3))
        noise = np.round(noise)
        self._noise_pos = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_neg = np.clip(-noise, 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ objects
    def _prepare_objects(self) -> None:
        if len(self.arena.objects) > 255 // 16 - MAX_ANIMALS:
            raise ValueError("too many cage objects for the label encoding")
        eye = self.camera.center
        shades = {(0, 0, 1): 1.0, (0, 0, -1): 0.5, (0, -1, 0): 0.72, (0, 1, 0): 0.8, (-1, 0, 0): 0.86, (1, 0, 0): 0.66}
        for k, obj in enumerate(self.arena.objects):
            owner = OBJECT_OWNER0 + k
            cu, _ = self.camera.project(obj.center[None])
            vig = float(self._vignette_at(cu[0]))
            faces, edges = [], []
            for f, (corners, normal) in enumerate(obj.faces()):
                if float(normal @ (eye - corners.mean(axis=0))) <= 0:
                    continue  # faces away from the camera
                pts = cv_points(self.camera.project(corners)[0], _SHIFT)
                value = owner << 4 | (f + 1)
                self.palette[value] = _scaled(obj.rgb, shades[tuple(int(v) for v in normal)] * vig)
                faces.append((pts, value))
                edges.append(pts)
            edge_value = owner << 4 | 15
            self.palette[edge_value] = _scaled(obj.rgb, 0.45 * vig)
            self._object_draws.append((self.camera.depth(obj.center), faces, edges, edge_value))

    def _vignette_at(self, uv: np.ndarray) -> float:
        x = int(np.clip(uv[0], 0, self.width - 1))
        y = int(np.clip(uv[1], 0, self.height - 1))
        return float(self.vignette[y, x])

    def _draw_order(self, bodies: list[Body3D]) -> list[tuple[str, int]]:
        """Back-to-front order of animals and objects."""
        keys: list[tuple[float, int, str, int]] = []
        for k, (depth, *_rest) in enumerate(self._object_draws):
            keys.append((depth, 0, "object", k))
        for i, body in enumerate(bodies):
            key = self.camera.depth(body.center)
            x, y = float(body.center[0]), float(body.center[1])
            for k, obj in enumerate(self.arena.objects):
                if not obj.contains(x, y):
                    continue
                obj_depth = self._object_draws[k][0]
                if obj.kind == "cover":  # inside it: drawn before it, hidden
                    key = max(key, obj_depth + 1e-3)
                elif obj.kind == "platform":  # on it: drawn after it
                    key = min(key, obj_depth - 1e-3)
            keys.append((key, -i, "animal", i))
        keys.sort(reverse=True)
        return [(kind, idx) for _, _, kind, idx in keys]

    # ------------------------------------------------------------------- animals
    def _animal_colors(self, i: int, vig: float) -> None:
        look = self.looks[i]
        fur = np.asarray(look.fur_rgb, dtype=np.float32)
        base = (i + 1) << 4
        colors = {
            "side": fur * 0.72, "body": fur, "highlight": fur * 1.13, "marking": fur * 0.6, "head": fur * 0.93,
            "ear": np.asarray(EAR_RGB, np.float32) * (0.9 + 0.1 * look.shade),
            "tail": np.asarray(TAIL_RGB, np.float32), "eye": np.asarray(EYE_RGB, np.float32),
        }
        for part, rgb in colors.items():
            self.palette[base | _PART[part]] = np.clip(rgb * vig, 0, 255)

    def _draw_animal(self, buf: np.ndarray, polys: list[tuple[str, np.ndarray]], tail: np.ndarray, tail_px: int,
                     eyes: np.ndarray, eye_r: int, owner: int | None) -> None:
        """Fill one animal into `buf`: values ``owner << 4 | part``, or 1 everywhere when owner is None."""

        def value(part: str) -> int:
            return 1 if owner is None else owner << 4 | _PART[part]

        cv2.polylines(buf, [tail], False, value("tail"), tail_px, cv2.LINE_8, _SHIFT)
        for part, pts in polys:
            cv2.fillPoly(buf, [pts], value(part), cv2.LINE_8, _SHIFT)
        if eye_r > 0:
            for e in eyes:
                cv2.circle(buf, (int(e[0]), int(e[1])), eye_r, value("eye"), -1, cv2.LINE_8, _SHIFT)

    def render(self, bodies: list[Body3D], frame_index: int, fps: float, rng: np.random.Generator) -> RenderedFrame:
        h, w = self.height, self.width
        labels = np.zeros((h, w), dtype=np.uint8)
        projected = []
        for i, body in enumerate(bodies):
            polys = body.polygons()
            arrays = [p for _, p in polys] + [body.tail, body.eyes, body.keypoints, body.center[None]]
            uv, depth = self.camera.project(np.vstack(arrays))
            splits = np.cumsum([len(a) for a in arrays])[:-1]
            parts = np.split(uv, splits)
            n_poly = len(polys)
            ppm = self.camera.K[0, 0] / max(float(depth[-1]), 1e-6)
            tail_px = max(1, int(round(body.tail_width * ppm)))
            eye_r = int(round(body.eye_radius * ppm * (1 << _SHIFT))) if body.eye_radius * ppm >= 0.5 else 0
            projected.append(dict(
                polys=[(name, cv_points(p, _SHIFT)) for (name, _), p in zip(polys, parts[:n_poly], strict=True)],
                tail=cv_points(parts[n_poly], _SHIFT), eyes=cv_points(parts[n_poly + 1], _SHIFT),
                keypoints=parts[n_poly + 2], center=parts[n_poly + 3][0], tail_px=tail_px, eye_r=eye_r,
                uv_all=uv))
            self._animal_colors(i, self._vignette_at(parts[n_poly + 3][0]))

        for kind, idx in self._draw_order(bodies):
            if kind == "object":
                _, faces, edges, edge_value = self._object_draws[idx]
                for pts, value in faces:
                    cv2.fillPoly(labels, [pts], value, cv2.LINE_8, _SHIFT)
                cv2.polylines(labels, edges, True, edge_value, 1, cv2.LINE_8, _SHIFT)
            else:
                p = projected[idx]
                self._draw_animal(labels, p["polys"], p["tail"], p["tail_px"], p["eyes"], p["eye_r"], idx + 1)

        owners = labels >> 4
        animals = [self._animal_truth(i, p, owners) for i, p in enumerate(projected)]
        image = self._compose(labels, frame_index / fps, rng)
        return RenderedFrame(image=image, owners=owners, animals=animals)

    def _animal_truth(self, i: int, p: dict, owners: np.ndarray) -> AnimalRender:
        h, w = owners.shape
        uv = p["uv_all"]
        pad = p["tail_px"] + 2
        x0 = int(np.clip(np.floor(uv[:, 0].min()) - pad, 0, w))
        y0 = int(np.clip(np.floor(uv[:, 1].min()) - pad, 0, h))
        x1 = int(np.clip(np.ceil(uv[:, 0].max()) + pad, 0, w))
        y1 = int(np.clip(np.ceil(uv[:, 1].max()) + pad, 0, h))
        crop = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=np.uint8)
        if crop.size:
            off = np.array([x0, y0], dtype=np.int32) << _SHIFT
            self._draw_animal(crop, [(n, pts - off) for n, pts in p["polys"]], p["tail"] - off, p["tail_px"],
                              p["eyes"] - off, p["eye_r"], None)
        kp = p["keypoints"]
        vis = np.zeros(len(kp), dtype=np.int64)
        for k, (u, v) in enumerate(kp):
            ix, iy = int(np.floor(u)), int(np.floor(v))
            if not (0 <= ix < w and 0 <= iy < h):
                continue
            here = owners[iy, ix]
            if here == i + 1:
                vis[k] = 2
            elif here == 0 and (owners[max(0, iy - 1):iy + 2, max(0, ix - 1):ix + 2] == i + 1).any():
                vis[k] = 2  # a thin tip the raster just missed
            else:
                vis[k] = 1
        return AnimalRender(keypoints=kp.copy(), keypoint_v=vis, amodal=crop.astype(bool), amodal_origin=(x0, y0))

    # ---------------------------------------------------------------- lighting
    def gain(self, t: float) -> float:
        a = self.lighting_drift
        return float(1.0 + a * 0.6 * np.sin(2 * np.pi * t / self._light_period[0] + self._light_phase[0])
                     + a * 0.4 * np.sin(2 * np.pi * t / self._light_period[1] + self._light_phase[1]))

    def _compose(self, labels: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
        image = self.background.copy()
        fg = labels != 0
        image[fg] = self.palette[labels[fg]]
        gain = self.gain(t) * (1.0 + 0.004 * float(rng.normal()))
        image = cv2.convertScaleAbs(image, alpha=gain)
        k = int(rng.integers(_NOISE_BANK))
        dx, dy = (int(v) for v in rng.integers(0, _NOISE_PAD, size=2))
        cv2.add(image, self._noise_pos[k, dy:dy + self.height, dx:dx + self.width], dst=image)
        cv2.subtract(image, self._noise_neg[k, dy:dy + self.height, dx:dx + self.width], dst=image)
        return image
