"""Readers and writers of the label formats the project reads and writes.

One module per format:

- :mod:`sipec.data.coco` -- COCO instances JSON (RLE masks, boxes, keypoints, track and identity ids);
- :mod:`sipec.data.dlc` -- DeepLabCut ``CollectedData`` CSV, single- and multi-animal layouts;
- :mod:`sipec.data.sleap` -- SLEAP ``.slp`` through sleap-io;
- :mod:`sipec.data.labels` -- identity-label CSV and behaviour-label CSV;
- :mod:`sipec.data.positions` -- per-frame 3D positions CSV;
- :mod:`sipec.data.tables` -- column checks shared by the CSV readers;
- :mod:`sipec.data.atomic` -- write-to-temp-then-rename helpers used by all writers.
"""
