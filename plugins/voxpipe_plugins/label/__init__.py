"""Label-map post-processing: components, holes, morphology in mm."""
