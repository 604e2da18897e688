"""The static part of every frame: bedding-covered floor, cage walls, vignette. Made once per video."""

from __future__ import annotations

import cv2
import numpy as np

from sipec.synth.arena import Arena

BEDDING_RGB = (206, 190, 158)
OUTSIDE_RGB = (66, 68, 72)
WALL_RGB = (186, 190, 196)
VIGNETTE_STRENGTH = 0.22


def cv_points(uv: np.ndarray, shift: int = 4) -> np.ndarray:
    """Pixel coordinates (project convention, pixel i spans [i, i+1)) -> OpenCV fixed-point int32 points."""
    return np.round((uv - 0.5) * (1 << shift)).astype(np.int32)


def vignette(width: int, height: int) -> np.ndarray:
    """HxW float32 gain, 1 in the centre falling to 1 - VIGNETTE_STRENGTH in the corners."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xs + 0.5 - width / 2) ** 2 + (ys + 0.5 - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    return (1.0 - VIGNETTE_STRENGTH * r2).astype(np.float32)


def bedding_texture(width_px: int, height_px: int, px_per_m: float, rng: np.random.Generator) -> np.ndarray:
    """Wood-chip bedding: blotchy shade variation and scattered chips, RGB uint8."""
    base = np.array(BEDDING_RGB, dtype=np.float32)
    shape = (height_px, width_px)
    low = cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), max(1.0, 0.02 * px_per_m))
    low *= 12.0 / max(float(low.std()), 1e-6)
    mid = cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), max(0.6, 0.003 * px_per_m))
    mid *= 9.0 / max(float(mid.std()), 1e-6)
    tex = base[None, None, :] + (low + mid)[:, :, None] * np.array([1.0, 0.95, 0.85], dtype=np.float32)
    tex = np.clip(tex, 0, 255).astype(np.uint8)
    n_chips = int(width_px * height_px / (px_per_m * px_per_m) * 16000)
    centers = rng.uniform([0, 0], [width_px, height_px], size=(n_chips, 2))
    lengths = rng.uniform(0.002, 0.007, n_chips) * px_per_m
    widths = lengths * rng.uniform(0.25, 0.5, n_chips)
    angles = rng.uniform(0, 180, n_chips)
    shades = rng.uniform(0.78, 1.12, n_chips)
    for (cx, cy), ln, wd, ang, sh in zip(centers, lengths, widths, angles, shades, strict=True):
        color = tuple(int(min(255, c * sh)) for c in BEDDING_RGB)
        cv2.ellipse(tex, (int(cx), int(cy)), (max(1, int(ln / 2)), max(0, int(wd / 2))), float(ang), 0, 360, color, -1)
    return cv2.GaussianBlur(tex, (3, 3), 0.6)


def make_background(arena: Arena, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 uint8 RGB: floor texture through the camera's floor homography, walls, vignette."""
    cam = arena.camera
    w, h = cam.width, cam.height
    corners = np.array([[0, 0, 0], [arena.floor_w, 0, 0], [arena.floor_w, arena.floor_d, 0], [0, arena.floor_d, 0]],
                       dtype=np.float64)
    ppm = min(2400.0 / max(arena.floor_w, arena.floor_d),
              max(cam.pixels_per_metre(c) for c in corners) * 1.2)
    tw, th = int(np.ceil(arena.floor_w * ppm)), int(np.ceil(arena.floor_d * ppm))
    tex = bedding_texture(tw, th, ppm, rng)
    # texture pixel i (OpenCV coordinate) -> world (i + 0.5) / ppm on z = 0 -> image pixel (OpenCV coordinate)
    to_world = np.array([[1 / ppm, 0, 0.5 / ppm], [0, 1 / ppm, 0.5 / ppm], [0, 0, 1]])
    plane = cam.K @ np.column_stack([cam.R[:, 0], cam.R[:, 1], cam.t])
    to_cv = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    H = to_cv @ plane @ to_world
    floor = cv2.warpPerspective(tex, H, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = OUTSIDE_RGB
    floor_mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(floor_mask, [cv_points(cam.project(corners)[0])], 1, cv2.LINE_8, 4)
    img[floor_mask.astype(bool)] = floor[floor_mask.astype(bool)]
    _draw_walls(img, arena)
    img = img.astype(np.float32) * vignette(w, h)[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_walls(img: np.ndarray, arena: Arena) -> None:
    """The inner faces of the walls the camera sees (the others are clear plastic: not drawn)."""
    cam = arena.camera
    W, D, Hw = arena.floor_w, arena.floor_d, arena.wall_h
    walls = [  # (bottom edge a, b), inward normal, shade
        ((0, 0), (W, 0), (0, 1), 0.92), ((W, 0), (W, D), (-1, 0), 0.84),
        ((W, D), (0, D), (0, -1), 0.96), ((0, D), (0, 0), (1, 0), 0.88),
    ]
    eye = cam.center
    for (ax, ay), (bx, by), (nx, ny), shade in walls:
        if (eye[0] - ax) * nx + (eye[1] - ay) * ny <= 0:
            continue  # the camera is behind this wall's inner face
        quad = np.array([[ax, ay, 0], [bx, by, 0], [bx, by, Hw], [ax, ay, Hw]], dtype=np.float64)
        pts = cv_points(cam.project(quad)[0])
        color = tuple(int(c * shade) for c in WALL_RGB)
        cv2.fillPoly(img, [pts], color, cv2.LINE_8, 4)
        cv2.polylines(img, [pts[2:]], False, tuple(int(c * 0.6) for c in WALL_RGB), 2, cv2.LINE_8, 4)
