"""The conformance kit behind ``zoo.testing``: gradient checks and the checks every plugin passes."""
