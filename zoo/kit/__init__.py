"""The conformance kit behind ``zoo.testing``: gradient checks and what every plugin passes."""
