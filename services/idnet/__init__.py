"""IdNet: which individual is this animal (DenseNet per crop, then bidirectional GRUs over 2T+1 crops)."""

DEFAULT_MODEL = "idnet"
DEFAULT_PORT = 50052
FRAME_SUFFIX = "-frame"
