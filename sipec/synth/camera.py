"""Pinhole cameras of the synthetic scenes, and their camera.json form.

World frame: metres, origin at a corner of the arena floor, x along the arena's width, y along its
depth, z up. Camera frame: x right, y down, z forward (OpenCV). A world point P projects to
``u, v = (K @ (R @ P + t))[:2] / depth`` in the project's pixel convention (pixel i spans
[i, i+1), centre at i+0.5). There is no lens distortion.

- ``top``: a camera straight above the arena's centre, the whole cage in view;
- ``perspective``: a camera above and outside one corner of a larger enclosure, looking down at
  its far side, so animals near and far differ in size and rearing animals change height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    K: np.ndarray  # (3, 3) intrinsics
    R: np.ndarray  # (3, 3) world -> camera rotation
    t: np.ndarray  # (3,) world -> camera translation
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """Camera position in world coordinates."""
        return -self.R.T @ self.t

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> (N, 2) pixel coordinates and (N,) depths (metres along the optical axis)."""
        cam = self.to_camera(points)
        depth = cam[:, 2]
        uv = cam[:, :2] / depth[:, None] * np.array([self.K[0, 0], self.K[1, 1]]) + self.K[:2, 2]
        return uv, depth

    def depth(self, point: np.ndarray) -> float:
        return float(self.R[2] @ np.asarray(point, dtype=np.float64) + self.t[2])

    def pixels_per_metre(self, point: np.ndarray) -> float:
        """Image scale at a world point (focal length over depth)."""
        return float(self.K[0, 0] / max(self.depth(point), 1e-6))

    def to_json(self) -> dict:
        return {"model": "pinhole", "width": self.width, "height": self.height, "K": self.K.tolist(),
                "R": self.R.tolist(), "t": self.t.tolist(), "dist_coeffs": [0.0] * 5,
                "position": self.center.tolist(),
                "convention": "u,v = (K (R X + t))[:2] / depth; pixel i spans [i, i+1); world z up, metres"}

    @classmethod
    def from_json(cls, data: dict) -> PinholeCamera:
        return cls(K=np.asarray(data["K"], dtype=np.float64), R=np.asarray(data["R"], dtype=np.float64),
                   t=np.asarray(data["t"], dtype=np.float64), width=int(data["width"]), height=int(data["height"]))


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation of a camera at `eye` looking at `target` (image y points down)."""
    up = np.array([0.0, 0.0, 1.0]) if up is None else up
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ eye


def fit_intrinsics(R: np.ndarray, t: np.ndarray, points: np.ndarray, width: int, height: int,
                   margin: float = 0.03) -> np.ndarray:
    """Intrinsics whose view just holds every world point, with a relative margin.

    The principal point is moved so that the points' bounding box is centred in the image.
    """
    cam = points @ R.T + t
    nx, ny = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    f = float(min(width * (1 - 2 * margin) / np.ptp(nx), height * (1 - 2 * margin) / np.ptp(ny)))
    cx = width / 2 - f * (nx.min() + nx.max()) / 2
    cy = height / 2 - f * (ny.min() + ny.max()) / 2
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def box_corners(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float) -> np.ndarray:
    return np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], dtype=np.float64)


def top_camera(floor_w: float, floor_d: float, wall_h: float, width: int, height: int,
               camera_h: float = 1.6) -> PinholeCamera:
    """Straight down from `camera_h` above the floor's centre; image x = world x, image y = -world y."""
    R = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    t = -R @ np.array([floor_w / 2, floor_d / 2, camera_h])
    K = fit_intrinsics(R, t, box_corners(0, 0, 0, floor_w, floor_d, wall_h), width, height, margin=0.005)
    return PinholeCamera(K=K, R=R, t=t, width=width, height=height)


def corner_camera(floor_w: float, floor_d: float, wall_h: float, width: int, height: int) -> PinholeCamera:
    """Above and outside the corner at the origin, looking diagonally across the floor."""
    eye = np.array([-0.2 * floor_w, -0.2 * floor_d, 0.7 * max(floor_w, floor_d)])
    target = np.array([0.5 * floor_w, 0.5 * floor_d, 0.0])
    R, t = look_at(eye, target)
    # the floor and the far walls (the near walls are clear and not drawn)
    points = np.array([[0, 0, 0], [floor_w, 0, 0], [floor_w, floor_d, 0], [0, floor_d, 0],
                       [floor_w, 0, wall_h], [floor_w, floor_d, wall_h], [0, floor_d, wall_h]], dtype=np.float64)
    K = fit_intrinsics(R, t, points, width, height, margin=0.02)
    return PinholeCamera(K=K, R=R, t=t, width=width, height=height)
