"""VGG feature extractors (`features.vgg`): torchvision-compatible VGG11/13/16/19 (+BN) in 2D and 3D, no torchvision."""
