"""SynthCity: a procedural street world ray-cast with numpy, written in the Cityscapes layout.

See docs/synthcity.md and docs/contracts.md ("Raw SynthCity"). Modules, bottom-up:
`noise` (world-anchored value noise), `road` (road-aligned coordinates), `camera` (intrinsics and
ego trajectory), `style` (target and source looks), `world` (the street of one snippet), `raycast`,
`shading`, `render` (`render_snippet`: frames in memory), `writer` (`write_dataset`: files, worker
processes), `figure` (the README figure).
"""
