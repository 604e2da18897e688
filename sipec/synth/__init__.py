"""`sipec synth`: a procedural home cage with complete ground truth.

Rodents seen from above (``top``) or from one corner of a room (``perspective``), with identity
cues, behaviours, occluding cage objects, lighting drift and sensor noise; every frame comes with
visible masks, keypoints, identities, behaviours and true 3D positions.

Modules, one job each:

- :mod:`.config` -- :class:`SynthConfig`, the settings of one video;
- :mod:`.appearance` -- identity cues; :mod:`.animals` -- the articulated body, ``KEYPOINT_NAMES``;
- :mod:`.behaviour` -- ``BEHAVIOURS``, bouts and postures; :mod:`.scene` -- motion over time;
- :mod:`.arena`, :mod:`.camera`, :mod:`.background`, :mod:`.render` -- the cage and drawing it;
- :mod:`.generator` -- :class:`SynthGenerator`, frames with their truth in memory;
- :mod:`.video`, :mod:`.writers`, :mod:`.pipeline` -- ``generate()``: the files of a dataset;
- :mod:`.reader` -- :class:`SynthDataset`, what training and evaluation code reads;
- :mod:`.cli` -- the ``sipec synth`` command.

Names are imported lazily so that ``import sipec.synth.cli`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SynthConfig": "sipec.synth.config",
    "SynthGenerator": "sipec.synth.generator",
    "SynthDataset": "sipec.synth.reader",
    "SynthInstance": "sipec.synth.reader",
    "generate": "sipec.synth.pipeline",
    "BEHAVIOURS": "sipec.synth.behaviour",
    "KEYPOINT_NAMES": "sipec.synth.animals",
    "SKELETON": "sipec.synth.animals",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sipec.synth' has no attribute {name!r}")
