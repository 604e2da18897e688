"""Identity cues: what makes one synthetic animal look different from another.

Each animal gets a unique combination of three subtle cues:

- fur shade: a brightness factor, evenly spaced in [0.88, 1.12] and shuffled (a few grey levels);
- a marking on the back (a dark spot at one of several places, a stripe, two spots, or none);
- size: a scale factor, evenly spaced in [0.94, 1.06] and shuffled.

No single cue is large, so telling animals apart needs a learned combination, as with real mice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARKINGS: tuple[str, ...] = ("none", "spot_front", "spot_rear", "stripe", "spot_left", "spot_right",
                             "two_spots", "spot_mid")
MAX_ANIMALS = len(MARKINGS)
FUR_RGB = (112, 100, 90)


@dataclass(frozen=True)
class Appearance:
    identity: int
    name: str
    shade: float
    marking: str
    size: float

    @property
    def fur_rgb(self) -> tuple[int, int, int]:
        return tuple(int(round(min(255.0, c * self.shade))) for c in FUR_RGB)  # type: ignore[return-value]

    def to_json(self) -> dict:
        return {"identity": self.identity, "name": self.name, "shade": round(self.shade, 4),
                "marking": self.marking, "size": round(self.size, 4), "fur_rgb": list(self.fur_rgb)}


def make_appearances(n: int, rng: np.random.Generator, names: list[str] | None = None) -> list[Appearance]:
    if not 1 <= n <= MAX_ANIMALS:
        raise ValueError(f"number of animals must be 1 to {MAX_ANIMALS}, not {n}")
    names = names or [f"animal_{i}" for i in range(n)]
    if len(names) != n or len(set(names)) != n:
        raise ValueError(f"need {n} distinct identity names, got {names}")
    shades = np.linspace(0.88, 1.12, n) if n > 1 else np.array([1.0])
    sizes = np.linspace(0.94, 1.06, n) if n > 1 else np.array([1.0])
    shade_order = rng.permutation(n)
    size_order = rng.permutation(n)
    markings = [MARKINGS[i] for i in rng.permutation(MAX_ANIMALS)[:n]]
    return [Appearance(identity=i, name=names[i], shade=float(shades[shade_order[i]]), marking=markings[i],
                       size=float(sizes[size_order[i]])) for i in range(n)]
