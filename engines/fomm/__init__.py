"""First Order Motion Model (FOMM; Siarohin et al., NeurIPS 2019): the model behind Avatarify.

Beside TPSMM (:mod:`splinecam.engines.tpsmm`), sharing its building blocks (anti-aliasing, hourglass,
Gaussians, coordinate grids): config (:mod:`.config`), networks with the official parameter names
(:mod:`.networks`), keypoints with jacobians and their normalisation (:mod:`.keypoints`), checkpoint
I/O (:mod:`.checkpoint`), the per-frame host step (:mod:`.host`) and the exported generator
(:mod:`.frame_generator`).
"""
