"""The animals' behaviour and motion over time.

Motion is an Ornstein-Uhlenbeck process on speed and turning rate, with the target speed set by the
behaviour; animals steer away from walls before they reach them, push each other apart softly when
they overlap (so they touch and cross, but rarely pile up), climb onto platforms and walk under
covers. A groomer steers to its partner's flank and holds its snout there for the whole bout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sipec.synth.animals import HEAD_LENGTH, HIPS_TO_CENTER, HIPS_TO_NECK, Body3D, Posture, build_body
from sipec.synth.appearance import Appearance
from sipec.synth.arena import Arena
from sipec.synth.behaviour import (
    APPROACH,
    BEHAVIOURS,
    MIN_BOUT_SECONDS,
    SPEED,
    TO_NEST,
    WALKING_STATES,
    choose_next,
    posture_target,
    sample_bout_frames,
)

_INDIVIDUAL = [b for b in BEHAVIOURS if b != "social_grooming"]
_WALL_MARGIN = 0.012  # metres between the walls and the body (snout, hips)
_REPULSION_DISTANCE = 0.05
_POSTURE_TAU = 0.12  # s
_SPEED_TAU = 0.25
_TURN_TAU = 0.3
_TURN_SIGMA = {"walking": 3.0, "none": 4.0, APPROACH: 1.0, TO_NEST: 1.0}  # rad/s per sqrt(s); stationary: 0.6


@dataclass
class AnimalState:
    look: Appearance
    x: float  # hips, metres
    y: float
    heading: float  # rad
    behaviour: str
    remaining: int  # frames left in the bout
    elapsed: int = 0  # frames since the bout began
    speed: float = 0.0
    turn: float = 0.0
    z_base: float = 0.0
    tail_phase: float = 0.0
    side: float = 1.0
    partner: int = -1
    role: str = ""  # "groomer" / "groomee" during social grooming
    posture: Posture = field(default_factory=Posture)

    @property
    def label(self) -> str:
        """The behaviour label of this frame (an approach is labelled walking)."""
        return "walking" if self.behaviour in WALKING_STATES else self.behaviour

    @property
    def labelled_partner(self) -> int:
        return self.partner if self.behaviour == "social_grooming" else -1

    def point_ahead(self, distance: float) -> tuple[float, float]:
        return self.x + distance * math.cos(self.heading), self.y + distance * math.sin(self.heading)


def _angle_diff(a: float, b: float) -> float:
    return (a - b + math.pi) % (2 * math.pi) - math.pi


class Scene:
    """All animals of one video; `step()` advances one frame."""

    def __init__(self, arena: Arena, looks: list[Appearance], fps: float, rng: np.random.Generator,
                 sociality: float = 1.0) -> None:
        self.arena = arena
        self.sociality = float(sociality)
        self.fps = float(fps)
        self.dt = 1.0 / self.fps
        self.rng = rng
        self.frame = 0
        self.animals: list[AnimalState] = []
        self.nest = next((o for o in arena.objects if o.kind == "cover"), None)
        placed: list[tuple[float, float]] = []
        for look in looks:
            for attempt in range(200):
                x = float(rng.uniform(0.08, arena.floor_w - 0.08))
                y = float(rng.uniform(0.08, arena.floor_d - 0.08))
                if all(math.hypot(x - px, y - py) > 0.09 for px, py in placed) or attempt == 199:
                    break
            placed.append((x, y))
            behaviour = _INDIVIDUAL[int(rng.integers(len(_INDIVIDUAL)))]
            state = AnimalState(look=look, x=x, y=y, heading=float(rng.uniform(-math.pi, math.pi)),
                                behaviour=behaviour,
                                remaining=int(rng.integers(1, sample_bout_frames(behaviour, fps, rng) + 1)),
                                side=float(rng.choice([-1.0, 1.0])), tail_phase=float(rng.uniform(0, 2 * math.pi)))
            state.z_base = arena.platform_height(*state.point_ahead(HIPS_TO_CENTER * look.size))
            state.posture = posture_target(behaviour, 0.0, state.side, 0.0)
            self.animals.append(state)

    # ----------------------------------------------------------------- behaviour
    def _flank_target(self, groomer: AnimalState, partner: AnimalState) -> tuple[float, float]:
        """The point on the partner's flank nearest to the groomer."""
        cx, cy = partner.point_ahead(HIPS_TO_CENTER * partner.look.size)
        nx, ny = -math.sin(partner.heading), math.cos(partner.heading)
        sign = 1.0 if (groomer.x - cx) * nx + (groomer.y - cy) * ny >= 0 else -1.0
        off = 0.017 * partner.look.size
        return cx + sign * nx * off, cy + sign * ny * off

    @staticmethod
    def _reach(a: AnimalState) -> float:
        """Hips-to-snout distance of an animal."""
        return (HIPS_TO_NECK * a.posture.length + 0.86 * HEAD_LENGTH) * a.look.size

    def _start(self, i: int, behaviour: str) -> None:
        a = self.animals[i]
        a.side = float(self.rng.choice([-1.0, 1.0]))
        a.role = ""
        a.partner = -1
        a.elapsed = 0
        if behaviour == APPROACH:
            taken = {b.partner for b in self.animals if b.behaviour == APPROACH}
            free = [j for j, b in enumerate(self.animals)
                    if j != i and j not in taken and b.behaviour not in ("social_grooming", APPROACH)
                    and math.hypot(b.x - a.x, b.y - a.y) > self._reach(a) + 0.05]
            if not free:
                behaviour = "walking"
            else:
                a.partner = free[int(self.rng.integers(len(free)))]
        a.behaviour = behaviour
        a.remaining = sample_bout_frames(behaviour, self.fps, self.rng)

    def _update_behaviour(self) -> None:
        n = len(self.animals)
        min_frames = max(1, round(MIN_BOUT_SECONDS * self.fps))
        for i, a in enumerate(self.animals):
            a.remaining -= 1
            a.elapsed += 1
            if a.behaviour == APPROACH:
                p = self.animals[a.partner]
                if p.behaviour in ("social_grooming", APPROACH):
                    # the partner got busy: carry on walking (same label, so no short bout)
                    a.behaviour = "walking"
                    a.partner = -1
                    a.remaining = max(min_frames - a.elapsed, round(0.5 * self.fps))
                    continue
                tx, ty = self._flank_target(a, p)
                close = math.hypot(tx - a.x, ty - a.y) < self._reach(a) + 0.012
                if close and a.elapsed >= min_frames // 2 and p.elapsed >= min_frames:
                    frames = sample_bout_frames("social_grooming", self.fps, self.rng)
                    a.behaviour = p.behaviour = "social_grooming"
                    a.role, p.role = "groomer", "groomee"
                    a.remaining = p.remaining = frames
                    a.elapsed = p.elapsed = 0
                    p.partner = i
                    p.side = float(self.rng.choice([-1.0, 1.0]))
                    continue
            if a.remaining <= 0:
                if a.behaviour == "social_grooming" and a.role == "groomer":
                    self._start(a.partner, choose_next("social_grooming", self.rng, False))
                elif a.behaviour == "social_grooming":
                    continue  # the groomer (same bout length) ends the bout for both
                self._start(i, choose_next(a.behaviour, self.rng, n >= 2, self.nest is not None, self.sociality))
            elif a.behaviour == TO_NEST and self.nest is not None:
                cx, cy = a.point_ahead(HIPS_TO_CENTER * a.look.size)
                if self.nest.contains(cx, cy, margin=-0.02):
                    a.behaviour = "resting"  # arrived: rest inside, hidden
                    a.elapsed = 0
                    a.remaining = int(1.5 * sample_bout_frames("resting", self.fps, self.rng))

    # -------------------------------------------------------------------- motion
    def _move(self) -> None:
        dt, rng, arena = self.dt, self.rng, self.arena
        a_speed = 1.0 - math.exp(-dt / _SPEED_TAU)
        a_turn = 1.0 - math.exp(-dt / _TURN_TAU)
        for a in self.animals:
            size = a.look.size
            v_target = SPEED.get(a.behaviour, 0.0) * size
            if a.behaviour == APPROACH:  # slow down on arrival
                tx, ty = self._flank_target(a, self.animals[a.partner])
                v_target = min(v_target, 3.0 * max(0.0, math.hypot(tx - a.x, ty - a.y) - self._reach(a)))
            elif a.behaviour == TO_NEST and self.nest is not None:
                nx, ny = float(self.nest.center[0]), float(self.nest.center[1])
                cx, cy = a.point_ahead(HIPS_TO_CENTER * size)
                v_target = min(v_target, 2.0 * math.hypot(nx - cx, ny - cy) + 0.02)
            a.speed = max(0.0, a.speed + a_speed * (v_target - a.speed) + 0.02 * math.sqrt(dt) * rng.normal()
                          * (v_target > 0))
            if v_target == 0.0:
                a.speed *= 0.7
            sigma = _TURN_SIGMA.get(a.behaviour, 0.6)
            a.turn += -a_turn * a.turn + sigma * math.sqrt(dt) * rng.normal()
            if a.behaviour in (APPROACH, "social_grooming") and a.role != "groomee":
                p = self.animals[a.partner]
                tx, ty = self._flank_target(a, p)
                want = math.atan2(ty - a.y, tx - a.x)
                a.turn = float(np.clip(5.0 * _angle_diff(want, a.heading), -5.0, 5.0))
                if a.role == "groomer":  # hold the snout on the partner's flank
                    gap = math.hypot(tx - a.x, ty - a.y) - self._reach(a)
                    a.x += 0.15 * gap * math.cos(want)
                    a.y += 0.15 * gap * math.sin(want)
            if a.behaviour == TO_NEST and self.nest is not None:  # head for the shelter (in a corner)
                cx, cy = a.point_ahead(HIPS_TO_CENTER * size)
                want = math.atan2(float(self.nest.center[1]) - cy, float(self.nest.center[0]) - cx)
                a.turn = float(np.clip(4.0 * _angle_diff(want, a.heading), -4.0, 4.0))
            # steer away from walls: look ahead and turn towards the centre
            lx, ly = a.point_ahead(0.09 * size + 0.4 * a.speed)
            m = 0.03
            if a.behaviour != TO_NEST and not (m < lx < arena.floor_w - m and m < ly < arena.floor_d - m):
                want = math.atan2(arena.floor_d / 2 - a.y, arena.floor_w / 2 - a.x)
                a.turn += 6.0 * _angle_diff(want, a.heading) * dt * 4.0
            a.turn = float(np.clip(a.turn, -6.0, 6.0))
            a.heading = (a.heading + a.turn * dt + math.pi) % (2 * math.pi) - math.pi
            a.x += a.speed * dt * math.cos(a.heading)
            a.y += a.speed * dt * math.sin(a.heading)
        self._separate()
        for a in self.animals:
            self._keep_inside(a)
            cx, cy = a.point_ahead(HIPS_TO_CENTER * a.look.size)
            a.z_base += 0.5 * (arena.platform_height(cx, cy) - a.z_base)
            if a.z_base < 1e-4:
                a.z_base = 0.0
            a.tail_phase += 2 * math.pi * (a.speed / 0.08 + 0.4) * dt

    def _separate(self) -> None:
        """Soft push between overlapping animals that are not grooming or approaching each other."""
        centers = [a.point_ahead(HIPS_TO_CENTER * a.look.size) for a in self.animals]
        n = len(self.animals)
        for i in range(n):
            for j in range(i + 1, n):
                a, b = self.animals[i], self.animals[j]
                if a.partner == j or b.partner == i:
                    continue
                dx, dy = centers[j][0] - centers[i][0], centers[j][1] - centers[i][1]
                d = math.hypot(dx, dy)
                if d >= _REPULSION_DISTANCE:
                    continue
                if d < 1e-6:
                    dx, dy, d = 1.0, 0.0, 1.0
                push = 0.2 * (_REPULSION_DISTANCE - d) / d
                a.x -= push * dx
                a.y -= push * dy
                b.x += push * dx
                b.y += push * dy

    def _keep_inside(self, a: AnimalState) -> None:
        """Shift the animal so that its hips and snout stay inside the walls."""
        w, d = self.arena.floor_w, self.arena.floor_d
        for dist in (0.0, self._reach(a)):
            px, py = a.point_ahead(dist)
            a.x += min(0.0, w - _WALL_MARGIN - px) + max(0.0, _WALL_MARGIN - px)
            a.y += min(0.0, d - _WALL_MARGIN - py) + max(0.0, _WALL_MARGIN - py)

    def _update_posture(self) -> None:
        alpha = 1.0 - math.exp(-self.dt / _POSTURE_TAU)
        t = self.frame * self.dt
        for a in self.animals:
            turn_bend = float(np.clip(0.7 * a.turn / max(a.speed, 0.05), -15.0, 15.0))
            head_to_partner = 0.0
            if a.role == "groomer":
                p = self.animals[a.partner]
                px, py = p.point_ahead(HIPS_TO_CENTER * p.look.size)
                bearing = _angle_diff(math.atan2(py - a.y, px - a.x), a.heading)
                head_to_partner = float(np.clip(0.5 * bearing, -0.6, 0.6))
            target = posture_target(a.behaviour, t + a.look.identity, a.side, turn_bend, a.role, head_to_partner)
            a.posture = a.posture.toward(target, alpha)

    # ---------------------------------------------------------------------- API
    def step(self) -> None:
        """Advance one frame: behaviours, then motion, then postures."""
        self.frame += 1
        self._update_behaviour()
        self._move()
        self._update_posture()

    def bodies(self) -> list[Body3D]:
        return [build_body(a.x, a.y, a.z_base, a.heading, a.posture, a.look, a.tail_phase) for a in self.animals]
