"""Data: Cityscapes-layout reader, SynthCity renderer, label tables."""
