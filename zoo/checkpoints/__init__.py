"""Checkpoints: one safetensors file per run, saved atomically, resumed bit-exactly.

``format`` reads and writes the file (safetensors plus zoo's metadata and content hash),
``checkpoint`` says what a run's checkpoint holds (save, load, use a trained model),
``callback`` writes checkpoints as a run trains, ``resume`` continues a saved run.
See docs/checkpoints.md.
"""
