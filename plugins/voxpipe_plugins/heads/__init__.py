"""Learning heads on a VGG backbone: the seed's multi-task model (classification + regression), single-task and RNN variants."""
