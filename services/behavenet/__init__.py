"""BehaveNet: behaviour per frame from pixels, per animal and per interacting pair (SIPEC).

Modules, one job each:

- xception.py   the Xception feature network and its SIPEC variants (full, mouse without the first 17 layers, small)
- model.py      feature network, frame classifier, temporal convolution network
- losses.py     multi-class focal loss (gamma 3, alpha 0.5)
- crops.py      individual crops and pair crops (dilated masks overlap -> crop on the joint COM)
- windows.py    temporal windows [t-n, t+n] with edge padding
- via.py        VIA 3 temporal segments -> per-frame labels
- data.py       labelled videos (synth folders, behaviour CSV / VIA, COCO masks) -> crops
- train.py      the two training stages and the export of three SavedModels
- predict.py    frame-only and temporal probabilities over a crop set (Keras or repository models)
- evaluate.py   per-class P/R/F1, macro-F1, Pearson r over time, confusion, shuffled-label chance
- (ethogram PNG and bout statistics: sipec.reports.ethogram, shared with `sipec analyze`)
- stream.py     per-subject feature buffers of ClassifyStream (n-frame delay, flush)
- service.py    the gRPC servicer
- cli.py        `sipec train|evaluate|serve behavenet`
"""

DEFAULT_MODEL = "behavenet"
DEFAULT_PORT = 50054
DEFAULT_MAX_SUBJECTS = 64            # open subjects per ClassifyStream
DEFAULT_MAX_BATCH = 64               # largest batch sent to a model
DEFAULT_MAX_CROP_PIXELS = 2048 * 2048
