"""The articulated rodent: a posture, and the 3D body it gives.

An animal is a spine curve from the tail base to the neck, anchored at the hips. The posture bends
it sideways (``bend``, 1/m), stretches it (``length``), widens it (``width``, ``front_width``) and
raises its front (``pitch``, rearing). The body outline follows the spine with a mouse-like width
profile; the head is an egg shape at the neck with its own yaw and pitch; two ears, two eyes, a
marking on the back, a tail that curls and swings. All in metres, world frame (z up); the renderer
projects it through the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from sipec.synth.appearance import Appearance

KEYPOINT_NAMES: tuple[str, ...] = ("snout", "left_ear", "right_ear", "neck", "body_center", "tail_base",
                                   "tail_mid", "tail_tip")
SKELETON: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7))

BODY_LENGTH = 0.070  # tail base to neck, metres, size 1
HEAD_LENGTH = 0.028
TAIL_LENGTH = 0.075
TAIL_WIDTH = 0.0035
_N_SPINE = 21
_U = np.linspace(0.0, 1.0, _N_SPINE)
_U_HIPS = 0.3  # the spine is anchored (and rears) at the hips
_U_CENTER = 0.6  # body centre: the 3D position of the animal
HIPS_TO_CENTER = (_U_CENTER - _U_HIPS) * BODY_LENGTH  # metres along the spine, size 1, length 1
HIPS_TO_NECK = (1.0 - _U_HIPS) * BODY_LENGTH
_HALF_WIDTH = np.interp(_U, [0.0, 0.08, 0.25, 0.5, 0.75, 0.92, 1.0],
                        [0.005, 0.010, 0.0155, 0.015, 0.0125, 0.0095, 0.0075])
_HEIGHT = np.interp(_U, [0.0, 0.1, 0.3, 0.5, 0.75, 1.0], [0.010, 0.018, 0.025, 0.027, 0.024, 0.019])
_N_HEAD = 9
_A_HEAD = np.linspace(-0.15, 1.0, _N_HEAD)
_HEAD_HALF_WIDTH = np.interp(_A_HEAD, [-0.15, 0.2, 0.45, 0.7, 0.88, 1.0],
                             [0.0075, 0.0088, 0.0082, 0.006, 0.0038, 0.0012])
_N_TAIL = 13
_TAIL_L = np.linspace(0.0, 1.0, _N_TAIL)
_CIRCLE8 = np.stack([np.cos(np.linspace(0, 2 * np.pi, 8, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 8, endpoint=False))], axis=1)


@dataclass
class Posture:
    length: float = 1.0
    width: float = 1.0
    bend: float = 0.0  # 1/m, positive bends to the animal's left
    pitch: float = 0.0  # rad, front raised about the hips
    front_width: float = 1.0
    head_yaw: float = 0.0  # rad, positive to the left
    head_pitch: float = 0.0
    tail_curl: float = 0.0  # 1/m
    tail_swing: float = 0.0  # rad, amplitude of the tail wave

    def toward(self, target: Posture, alpha: float) -> Posture:
        """Exponential smoothing step towards `target`."""
        return Posture(**{f.name: getattr(self, f.name) + alpha * (getattr(target, f.name) - getattr(self, f.name))
                          for f in fields(Posture)})


@dataclass
class Body3D:
    """Points of one animal's body in draw order, world frame."""

    side: np.ndarray  # (M, 3) outline at the floor contact (drawn darker: the flanks)
    top: np.ndarray  # (M, 3) outline of the back
    highlight: np.ndarray  # (M', 3) lighter band along the back
    markings: list[np.ndarray]
    head: np.ndarray
    ears: list[np.ndarray]
    eyes: np.ndarray  # (2, 3) centres
    eye_radius: float
    tail: np.ndarray  # (T, 3) polyline
    tail_width: float
    keypoints: np.ndarray  # (K, 3)
    center: np.ndarray  # (3,) body centre at mid height: the animal's 3D position

    def polygons(self) -> list[tuple[str, np.ndarray]]:
        """(part, points) of the filled parts, in draw order (the tail and eyes are drawn apart)."""
        out = [("side", self.side), ("body", self.top), ("highlight", self.highlight)]
        out += [("marking", m) for m in self.markings]
        out += [("head", self.head)]
        out += [("ear", e) for e in self.ears]
        return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def build_body(x: float, y: float, z_base: float, heading: float, posture: Posture, look: Appearance,
               tail_phase: float) -> Body3D:
    """The body of an animal whose hips are at (x, y, z_base), facing `heading` (rad, world)."""
    size = look.size
    length = BODY_LENGTH * size * posture.length
    s = (_U - _U_HIPS) * length  # arc length from the hips
    ds = length / (_N_SPINE - 1)
    yaw = heading + posture.bend * s
    pitch = posture.pitch * _smoothstep((_U - _U_HIPS) / 0.15)
    # integrate the spine from the hips, forwards and backwards, with segment-midpoint angles
    yaw_mid = 0.5 * (yaw[1:] + yaw[:-1])
    pitch_mid = 0.5 * (pitch[1:] + pitch[:-1])
    step = ds * np.stack([np.cos(pitch_mid) * np.cos(yaw_mid), np.cos(pitch_mid) * np.sin(yaw_mid),
                          np.sin(pitch_mid)], axis=1)
    spine = np.vstack([np.zeros((1, 3)), np.cumsum(step, axis=0)])
    i_hips = int(round(_U_HIPS * (_N_SPINE - 1)))
    spine += np.array([x, y, z_base]) - spine[i_hips]
    normal = np.stack([-np.sin(yaw), np.cos(yaw), np.zeros_like(yaw)], axis=1)  # animal's left
    front = 1.0 + (posture.front_width - 1.0) * _smoothstep((_U - 0.45) / 0.35)
    half_w = (_HALF_WIDTH * size * posture.width * front)[:, None]
    height = _HEIGHT * size * (1.0 + 0.15 * (posture.width - 1.0))
    top_z = np.array([0.0, 0.0, 1.0]) * height[:, None]
    up_small = np.array([0.0, 0.0, 0.002])

    def band(frac: np.ndarray | float, lo: int, hi: int, z: np.ndarray) -> np.ndarray:
        left = spine[lo:hi] + z[lo:hi] + normal[lo:hi] * (half_w[lo:hi] * frac)
        right = spine[lo:hi] + z[lo:hi] - normal[lo:hi] * (half_w[lo:hi] * frac)
        return np.vstack([left, right[::-1]])

    side = band(1.0, 0, _N_SPINE, np.broadcast_to(up_small, (_N_SPINE, 3)))
    top = band(1.0, 0, _N_SPINE, top_z)
    top_hi = top_z + 0.0005
    highlight = band(0.42, 2, _N_SPINE - 2, top_hi)
    markings = _markings(look.marking, spine, normal, half_w[:, 0], top_z + 0.001, yaw, size)

    # head: an egg shape from the neck, with its own yaw and pitch
    neck = spine[-1]
    h_neck = height[-1]
    head_yaw = yaw[-1] + posture.head_yaw
    head_pitch = pitch[-1] + posture.head_pitch
    axis = np.array([math.cos(head_pitch) * math.cos(head_yaw), math.cos(head_pitch) * math.sin(head_yaw),
                     math.sin(head_pitch)])
    lateral = np.array([-math.sin(head_yaw), math.cos(head_yaw), 0.0])
    head_len = HEAD_LENGTH * size
    head_base = neck + np.array([0.0, 0.0, 0.55 * h_neck])
    head_axis_pts = head_base + np.outer(_A_HEAD * head_len, axis)
    head_top = head_axis_pts + np.array([0.0, 0.0, 0.006 * size])
    hw = (_HEAD_HALF_WIDTH * size)[:, None]
    head = np.vstack([head_top + lateral * hw, (head_top - lateral * hw)[::-1]])

    def head_point(a: float, lat: float, dz: float) -> np.ndarray:
        return head_base + a * head_len * axis + lat * lateral + np.array([0.0, 0.0, dz])

    ear_r = 0.0055 * size
    ear_lat = 0.0098 * size
    ear_c = [head_point(0.2, ear_lat, 0.008 * size), head_point(0.2, -ear_lat, 0.008 * size)]
    ears = [c + np.column_stack([_CIRCLE8 * ear_r, np.zeros(8)]) for c in ear_c]
    eyes = np.stack([head_point(0.5, 0.0066 * size, 0.0065 * size), head_point(0.5, -0.0066 * size, 0.0065 * size)])
    snout = head_point(0.86, 0.0, 0.006 * size)

    # tail: from near the tail base, backwards, curling and swinging, lying on the support
    tail_len = TAIL_LENGTH * size
    base_idx = 1
    tail_start = spine[base_idx] + np.array([0.0, 0.0, 0.004])
    back = yaw[0] + math.pi
    lengths = _TAIL_L * tail_len
    angle = back + posture.tail_curl * lengths + posture.tail_swing * _TAIL_L * np.sin(tail_phase - 2 * np.pi * _TAIL_L)
    ang_mid = 0.5 * (angle[1:] + angle[:-1])
    seg = (tail_len / (_N_TAIL - 1)) * np.stack([np.cos(ang_mid), np.sin(ang_mid), np.zeros(_N_TAIL - 1)], axis=1)
    tail = np.vstack([tail_start, tail_start + np.cumsum(seg, axis=0)])
    tail[:, 2] = np.interp(_TAIL_L, [0.0, 0.25, 1.0], [tail_start[2], z_base + 0.003, z_base + 0.003])

    i_center = int(round(_U_CENTER * (_N_SPINE - 1)))
    keypoints = np.stack([
        snout, ear_c[0], ear_c[1], spine[-2] + top_z[-2], spine[i_center] + top_z[i_center],
        spine[base_idx] + top_z[base_idx] * 0.5, tail[_N_TAIL // 2], tail[-1],
    ])
    center = spine[i_center] + top_z[i_center] * 0.5
    return Body3D(side=side, top=top, highlight=highlight, markings=markings, head=head, ears=ears, eyes=eyes,
                  eye_radius=0.0013 * size, tail=tail, tail_width=TAIL_WIDTH * size, keypoints=keypoints,
                  center=center)


def _spot(center: np.ndarray, yaw: float, along: float, across: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    local = _CIRCLE8 * np.array([along, across])
    xy = np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c], axis=1)
    return center + np.column_stack([xy, np.zeros(8)])


def _markings(kind: str, spine: np.ndarray, normal: np.ndarray, half_w: np.ndarray, top_z: np.ndarray,
              yaw: np.ndarray, size: float) -> list[np.ndarray]:
    n = _N_SPINE - 1
    along, across = 0.0065 * size, 0.0048 * size

    def spot(u: float, lat: float = 0.0) -> np.ndarray:
        i = int(round(u * n))
        return _spot(spine[i] + top_z[i] + normal[i] * lat * half_w[i], float(yaw[i]), along, across)

    if kind == "spot_front":
        return [spot(0.78)]
    if kind == "spot_mid":
        return [spot(0.5)]
    if kind == "spot_rear":
        return [spot(0.2)]
    if kind == "spot_left":
        return [spot(0.45, 0.55)]
    if kind == "spot_right":
        return [spot(0.45, -0.55)]
    if kind == "two_spots":
        return [spot(0.25), spot(0.72)]
    if kind == "stripe":
        lo, hi = int(0.2 * n), int(0.85 * n)
        w = (half_w[lo:hi] * 0.2)[:, None]
        pts = spine[lo:hi] + top_z[lo:hi]
        return [np.vstack([pts + normal[lo:hi] * w, (pts - normal[lo:hi] * w)[::-1]])]
    return []
