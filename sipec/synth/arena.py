"""The cage: floor, walls and the objects in it (shelter, feeder, platform).

Objects are axis-aligned boxes of three kinds:

- ``cover`` (shelter): an animal whose centre is inside it is hidden by it;
- ``platform``: an animal whose centre is over it climbs onto it (its z rises to the top);
- ``overhead`` (feeder, raised on a wall): animals pass under it; what hides what follows depth.

Positions are drawn once per seed; sizes are fixed (mouse-cage scale, metres).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from sipec.synth.camera import PinholeCamera, corner_camera, top_camera

TOP_FLOOR_WIDTH = 0.60  # metres; the depth follows the image's aspect ratio
TOP_WALL_HEIGHT = 0.15
ROOM_FLOOR = (1.0, 0.75)
ROOM_WALL_HEIGHT = 0.25


@dataclass(frozen=True)
class CageObject:
    name: str
    kind: str  # "cover", "platform" or "overhead"
    x0: float
    y0: float
    x1: float
    y1: float
    z0: float
    z1: float
    rgb: tuple[int, int, int]

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        return self.x0 - margin <= x <= self.x1 + margin and self.y0 - margin <= y <= self.y1 + margin

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2, (self.z0 + self.z1) / 2])

    def faces(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(corners (4, 3), outward normal (3,)) of the box's six faces."""
        x0, y0, z0, x1, y1, z1 = self.x0, self.y0, self.z0, self.x1, self.y1, self.z1
        return [
            (np.array([[x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]]), np.array([0.0, 0, 1])),
            (np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]]), np.array([0.0, 0, -1])),
            (np.array([[x0, y0, z0], [x1, y0, z0], [x1, y0, z1], [x0, y0, z1]]), np.array([0.0, -1, 0])),
            (np.array([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]]), np.array([0.0, 1, 0])),
            (np.array([[x0, y0, z0], [x0, y1, z0], [x0, y1, z1], [x0, y0, z1]]), np.array([-1.0, 0, 0])),
            (np.array([[x1, y0, z0], [x1, y1, z0], [x1, y1, z1], [x1, y0, z1]]), np.array([1.0, 0, 0])),
        ]


@dataclass
class Arena:
    mode: str  # "top" or "perspective"
    floor_w: float
    floor_d: float
    wall_h: float
    camera: PinholeCamera
    objects: list[CageObject] = field(default_factory=list)

    def platform_height(self, x: float, y: float) -> float:
        """Height of the surface an animal at (x, y) stands on."""
        heights = [o.z1 for o in self.objects if o.kind == "platform" and o.contains(x, y)]
        return max(heights, default=0.0)

    def to_json(self) -> dict:
        return {"mode": self.mode, "units": "m", "floor": [self.floor_w, self.floor_d], "wall_height": self.wall_h,
                "origin": "floor corner; x along width, y along depth, z up",
                "objects": [asdict(o) for o in self.objects]}


def make_arena(mode: str, width: int, height: int, rng: np.random.Generator, with_objects: bool = True,
               floor_width: float = TOP_FLOOR_WIDTH) -> Arena:
    if mode == "top":
        floor_w = floor_width
        floor_d = floor_width * height / width
        wall_h = TOP_WALL_HEIGHT
        camera = top_camera(floor_w, floor_d, wall_h, width, height)
    elif mode == "perspective":
        floor_w, floor_d = ROOM_FLOOR
        wall_h = ROOM_WALL_HEIGHT
        camera = corner_camera(floor_w, floor_d, wall_h, width, height)
    else:
        raise ValueError(f"camera mode must be 'top' or 'perspective', not {mode!r}")
    arena = Arena(mode=mode, floor_w=floor_w, floor_d=floor_d, wall_h=wall_h, camera=camera)
    if with_objects:
        arena.objects = _place_objects(floor_w, floor_d, rng, far_side=mode == "perspective")
    return arena


def _place_objects(w: float, d: float, rng: np.random.Generator, far_side: bool) -> list[CageObject]:
    """A shelter in a corner, a feeder on a wall, a platform in the open; never overlapping."""
    objects: list[CageObject] = []
    # shelter: in one corner (the perspective camera sees the far corners better)
    sw, sd, sh = 0.13, 0.09, 0.07
    corners = [(1, 1), (1, 0), (0, 1)] if far_side else [(0, 0), (1, 0), (0, 1), (1, 1)]
    cx, cy = corners[int(rng.integers(len(corners)))]
    x0 = 0.0 if cx == 0 else w - sw
    y0 = 0.0 if cy == 0 else d - sd
    objects.append(CageObject("shelter", "cover", x0, y0, x0 + sw, y0 + sd, 0.0, sh, (176, 58, 52)))
    # feeder: a hopper on a wall, raised so that animals pass under it
    fw, fd = 0.16, 0.045
    for _ in range(50):
        along_x = bool(rng.integers(2))
        side = int(rng.integers(2)) if not far_side else 1
        if along_x:
            fx0 = float(rng.uniform(0.05, w - fw - 0.05))
            fy0 = 0.0 if side == 0 else d - fd
            cand = CageObject("feeder", "overhead", fx0, fy0, fx0 + fw, fy0 + fd, 0.05, 0.11, (150, 156, 164))
        else:
            fy0 = float(rng.uniform(0.05, d - fw - 0.05))
            fx0 = 0.0 if side == 0 else w - fd
            cand = CageObject("feeder", "overhead", fx0, fy0, fx0 + fd, fy0 + fw, 0.05, 0.11, (150, 156, 164))
        if not any(_overlap(cand, o, 0.03) for o in objects):
            objects.append(cand)
            break
    # platform: a low box in the open that animals climb onto
    pw, pd, ph = 0.11, 0.09, 0.035
    for _ in range(100):
        px0 = float(rng.uniform(0.12, w - pw - 0.12))
        py0 = float(rng.uniform(0.10, d - pd - 0.10))
        cand = CageObject("platform", "platform", px0, py0, px0 + pw, py0 + pd, 0.0, ph, (184, 150, 104))
        if not any(_overlap(cand, o, 0.06) for o in objects):
            objects.append(cand)
            break
    return objects


def _overlap(a: CageObject, b: CageObject, gap: float) -> bool:
    return not (a.x1 + gap <= b.x0 or b.x1 + gap <= a.x0 or a.y1 + gap <= b.y0 or b.y1 + gap <= a.y0)
