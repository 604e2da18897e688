"""Tracker: identities through time, interactions, and 3D position from one camera (SIPEC).

- :mod:`.detections`: the tracker's view of one instance (box, COCO RLE mask, COM, area);
- :mod:`.options`: per-stream options and the server's limits on them;
- :mod:`.matching`: mask IoU between instances and tracks, greedy (paper) and Hungarian assignment;
- :mod:`.identity`: IdNet probabilities smoothed along each track, one identity per animal per frame;
- :mod:`.interactions`: pairs whose dilated masks overlap;
- :mod:`.tracker`: :class:`~.tracker.StreamTracker`, the state of one video (bounded);
- :mod:`.mot`: identity switches, IDF1, MOTA against ground-truth tracks;
- :mod:`.depth3d` and :mod:`.model`: 3D from one camera (Isomap + least squares), exported as a SavedModel;
- :mod:`.density`: position density maps per individual;
- :mod:`.data`, :mod:`.simulated_idnet`, :mod:`.run_tracking`: inputs and outputs of `sipec evaluate tracker`;
- :mod:`.service` and :mod:`.cli`: the gRPC service and the `sipec` subcommands.

Nothing here imports TensorFlow at module level.
"""
