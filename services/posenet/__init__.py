"""PoseNet: top-down pose estimation (Simple Baselines encoder-decoder, Gaussian heatmaps) on animal crops."""
