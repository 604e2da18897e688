"""Where a track's animal should be now: a constant-velocity Kalman filter on its centre of mass.

Modern multi-object trackers (SORT, ByteTrack, OC-SORT) match detections to where each track is predicted to
be, not to where it was last seen: an animal that moves more than its own width between frames (fish, flies,
mice running) no longer overlaps its last mask, and a track lost for a few frames is looked for where it was
going. The state is (x, y, vx, vy) in frame pixels; noise scales with the animal's size (its length, the longer
side of its box: an animal moves by lengths, and a fish is about 2.5 times longer than the square root of its area),
so the same settings suit a 30-pixel fly and a 300-pixel mouse. Prediction through a gap stops
extrapolating after `MAX_EXTRAPOLATE` frames (an animal does not keep going in a straight line for long).

Pure numpy, deterministic: the same sequence of updates gives the same state (a resume replays them).
"""

from __future__ import annotations

import math

import numpy as np

MAX_EXTRAPOLATE = 5        # frames of constant-velocity prediction through a gap, at most
MEASUREMENT_STD = 0.05     # x body length: how far a mask's centre of mass may sit from the true centre
ACCELERATION_STD = 0.1     # x body length per frame^2: how fast an animal may change speed
INITIAL_SPEED_STD = 1.0    # x body length per frame: the speed of a new track is unknown


class CentreFilter:
    """Kalman filter of one track's centre of mass."""

    def __init__(self, com: tuple[float, float], frame: int, size: float) -> None:
        self.size = max(float(size), 1.0)
        self.frame = frame
        self.x = np.array([com[0], com[1], 0.0, 0.0])
        r = (MEASUREMENT_STD * self.size) ** 2
        v = (INITIAL_SPEED_STD * self.size) ** 2
        self.P = np.diag([r, r, v, v])

    def _transition(self, dt: int) -> tuple[np.ndarray, np.ndarray]:
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        q = (ACCELERATION_STD * self.size) ** 2
        g = np.array([[dt * dt / 2, 0], [0, dt * dt / 2], [dt, 0], [0, dt]])
        return f, q * g @ g.T

    def predict(self, frame: int) -> tuple[float, float]:
        """The predicted centre at `frame` (no state change); constant velocity for at most MAX_EXTRAPOLATE frames."""
        dt = min(max(frame - self.frame, 0), MAX_EXTRAPOLATE)
        return float(self.x[0] + self.x[2] * dt), float(self.x[1] + self.x[3] * dt)

    def speed(self) -> float:
        return math.hypot(self.x[2], self.x[3])

    def position_std(self, frame: int) -> float:
        """Standard deviation (pixels, per axis, averaged) of the predicted centre at `frame`: small for a track
        whose speed is known, large for a new one or after a long gap."""
        dt = max(frame - self.frame, 0)
        f, q = self._transition(min(dt, MAX_EXTRAPOLATE))
        p = f @ self.P @ f.T + q * max(1, dt - MAX_EXTRAPOLATE + 1)
        return math.sqrt(max((p[0, 0] + p[1, 1]) / 2, 0.0))

    def update(self, com: tuple[float, float], frame: int, size: float) -> None:
        """Fold in the centre measured at `frame` (after the last update)."""
        dt = max(frame - self.frame, 1)
        f, q = self._transition(min(dt, MAX_EXTRAPOLATE))
        x = f @ self.x
        p = f @ self.P @ f.T + q * max(1, dt - MAX_EXTRAPOLATE + 1)
        h = np.eye(2, 4)
        r = np.eye(2) * (MEASUREMENT_STD * self.size) ** 2
        s = h @ p @ h.T + r
        k = p @ h.T @ np.linalg.inv(s)
        self.x = x + k @ (np.asarray(com, dtype=np.float64) - h @ x)
        self.P = (np.eye(4) - k @ h) @ p
        self.frame = frame
        self.size = 0.8 * self.size + 0.2 * max(float(size), 1.0)
