"""Behaviours: the label set, bout lengths and transitions, and the posture each one takes.

Label set (every animal has exactly one label in every frame):

- ``none``: anything else -- slow exploration, sniffing, turning on the spot with the head scanning.
  This is the dominant "none" class that BehaveNet trains against in the SIPEC paper.
- ``walking``: moving at 10-20 cm/s, body elongated, tail swinging. An animal on its way to
  groom another one, or on its way into the shelter to rest there (hidden), is walking.
- ``rearing``: stationary, front of the body raised on the hind legs (seen from above: shorter body,
  wider front, head raised; in the perspective camera the body and head rise in z).
- ``grooming``: self-grooming, stationary, body curled into a C with the head moving against the flank.
- ``resting``: stationary, compact and curled, tail wrapped around, slow breathing.
- ``social_grooming``: two animals in contact, one grooming the other's flank. Both animals get the
  label, each with the other as ``partner``; it only happens when they are close.

Bouts follow a semi-Markov process: a bout's length is drawn from a gamma distribution with the
mean in :data:`MEAN_BOUT_SECONDS` (tens of frames at 30 fps), then the next behaviour from
:data:`NEXT_WEIGHTS` (never the same one twice in a row).
"""

from __future__ import annotations

import math

import numpy as np

from sipec.synth.animals import Posture

BEHAVIOURS: tuple[str, ...] = ("none", "walking", "rearing", "grooming", "resting", "social_grooming")
SOCIAL_BEHAVIOURS: tuple[str, ...] = ("social_grooming",)
APPROACH = "approach"  # internal: walking towards a partner to groom it (labelled "walking")
TO_NEST = "to_nest"  # internal: walking into the shelter to rest there, hidden (labelled "walking")
WALKING_STATES = ("walking", APPROACH, TO_NEST)

MEAN_BOUT_SECONDS: dict[str, float] = {
    "none": 1.6, "walking": 1.5, "rearing": 1.1, "grooming": 2.6, "resting": 3.5, "social_grooming": 2.4,
    APPROACH: 4.0,  # the longest an approach may last before the animal gives up
    TO_NEST: 6.0,
}
MIN_BOUT_SECONDS = 0.4
NEXT_WEIGHTS: dict[str, float] = {
    "none": 0.24, "walking": 0.30, "rearing": 0.14, "grooming": 0.12, "resting": 0.09, APPROACH: 0.08, TO_NEST: 0.04,
}
SPEED: dict[str, float] = {"none": 0.035, "walking": 0.15, APPROACH: 0.15, TO_NEST: 0.15}  # m/s, size 1


def sample_bout_frames(behaviour: str, fps: float, rng: np.random.Generator) -> int:
    mean = MEAN_BOUT_SECONDS[behaviour]
    if behaviour in (APPROACH, TO_NEST):
        return int(round(mean * fps))
    seconds = max(MIN_BOUT_SECONDS, float(rng.gamma(4.0, mean / 4.0)))
    return max(1, int(round(seconds * fps)))


def choose_next(current: str, rng: np.random.Generator, social_possible: bool, nest_possible: bool = False,
                sociality: float = 1.0) -> str:
    """The next bout's behaviour (or APPROACH, the start of a social bout, or TO_NEST).

    `sociality` scales the weight of APPROACH (0: never; 1: the default mix).
    """
    social_possible = social_possible and sociality > 0
    names = [b for b in NEXT_WEIGHTS if b != current and (social_possible or b != APPROACH)
             and (nest_possible or b != TO_NEST)]
    weights = np.array([NEXT_WEIGHTS[b] * (sociality if b == APPROACH else 1.0) for b in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def posture_target(behaviour: str, t: float, side: float, turn_bend: float, role: str = "",
                   head_to_partner: float = 0.0) -> Posture:
    """The posture an animal tends to in `behaviour` at time `t` (s).

    `side` (+1/-1) is the bend direction of curled postures, `turn_bend` the body bend from the
    current turning rate (1/m), `head_to_partner` the head yaw towards a grooming partner (rad).
    """
    if behaviour in WALKING_STATES:
        return Posture(length=1.08, width=0.95, bend=turn_bend, tail_swing=0.35,
                       head_yaw=0.08 * math.sin(2 * math.pi * 1.3 * t))
    if behaviour == "rearing":
        return Posture(length=1.0, width=1.0, pitch=1.15, front_width=1.2, head_pitch=0.3,
                       head_yaw=0.25 * math.sin(2 * math.pi * 0.7 * t), tail_curl=2.0 * side)
    if behaviour == "grooming":
        return Posture(length=0.88, width=1.06, bend=22.0 * side, tail_curl=6.0 * side,
                       head_yaw=side * (1.15 + 0.25 * math.sin(2 * math.pi * 4.0 * t)),
                       head_pitch=-0.2)
    if behaviour == "resting":
        return Posture(length=0.82, width=1.12 + 0.025 * math.sin(2 * math.pi * 2.2 * t), bend=20.0 * side,
                       head_yaw=0.8 * side, tail_curl=32.0 * side, head_pitch=-0.2)
    if behaviour == "social_grooming":
        if role == "groomer":
            return Posture(length=0.95, width=1.0, bend=0.4 * head_to_partner * 10.0,
                           head_yaw=head_to_partner + 0.2 * math.sin(2 * math.pi * 3.5 * t), head_pitch=-0.15)
        return Posture(length=0.88, width=1.08, bend=8.0 * side, head_yaw=0.4 * side, tail_curl=10.0 * side)
    # none: slow exploration with the head scanning
    return Posture(length=1.0, width=1.0, bend=0.5 * turn_bend, tail_swing=0.12,
                   head_yaw=0.45 * math.sin(2 * math.pi * 0.6 * t + side))
