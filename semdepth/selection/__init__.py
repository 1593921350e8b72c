"""Choosing the frames to annotate (Hoyer et al. 2021, Algorithm 1): teacher features, incremental
distances, the student and its depth error, greedy farthest-point selection, and `run` (all of
it over the pool of a prepared manifest: what the select stage calls).

Modules are imported explicitly (`from semdepth.selection.greedy import select_frames`): the pure
tensor code (distance, greedy) does not pull in the networks.
"""
