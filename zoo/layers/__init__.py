"""Layers: the building blocks every architecture is made of."""
