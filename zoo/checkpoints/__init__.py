"""Checkpoints: one safetensors file per run, saved atomically, resumed bit-exactly."""
