"""SynthCity: a procedural street world ray-cast with numpy, written in the Cityscapes layout.

See docs/contracts.md ("Raw SynthCity") and the design note SYNTHCITY.md. Entry points:
`render_snippet` (in memory) and `write_dataset` (files, parallel workers).
"""
