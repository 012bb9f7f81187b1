"""The description of a dataset an architecture builds a model for."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from zoo.errors import ConfigError

KINDS = ("vector", "sequence", "image")
TASKS = ("classify", "regress", "reconstruct")


@dataclass(frozen=True)
class DataSpec:
    """What a builder needs to know about the data, passed by value (JSON-serialisable).

    Args:
        input_shape: one example's shape, without the batch axis: ``(F,)`` for vectors,
            ``(T, F)`` for sequences, ``(C, H, W)`` for images.
        kind: ``"vector"``, ``"sequence"`` or ``"image"``.
        task: ``"classify"``, ``"regress"`` or ``"reconstruct"``.
        output_size: classes for classify, targets for regress, input size for reconstruct.
        num_classes: the number of classes of labelled data (also for an autoencoder on it).
        name: the dataset's name, for messages.
        input_range: ``(min, max)`` of the training inputs, so a builder can pick an output
            activation and loss that fit (sigmoid + BCE for data in [0, 1]).
    """

    input_shape: tuple
    kind: str
    task: str
    output_size: int
    num_classes: int | None = None
    name: str = ""
    input_range: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.input_range is not None:
            object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))
        if self.kind not in KINDS:
            raise ConfigError(f"data kind must be one of {', '.join(KINDS)}; "
                              f"received {self.kind!r}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; received {self.task!r}")
        expected_rank = {"vector": 1, "sequence": 2, "image": 3}[self.kind]
        if len(self.input_shape) != expected_rank:
            raise ConfigError(
                f"{self.kind} data needs an input shape of rank {expected_rank}; "
                f"received {self.input_shape}"
            )

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    def with_task(self, task: str) -> DataSpec:
        """The same data seen under another task (an autoencoder reconstructs labelled data)."""
        output_size = self.input_size if task == "reconstruct" else self.output_size
        return DataSpec(self.input_shape, self.kind, task, output_size, self.num_classes,
                        self.name, self.input_range)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["input_range"] = None if self.input_range is None else list(self.input_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        return cls(**{k: d[k] for k in ("input_shape", "kind", "task", "output_size")},
                   num_classes=d.get("num_classes"), name=d.get("name", ""),
                   input_range=d.get("input_range"))
