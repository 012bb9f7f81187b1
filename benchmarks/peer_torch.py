"""The canonical workloads in PyTorch (CPU, eager): training steps per second, as JSON lines.

Run with an interpreter that has torch (never a dependency of zoo):

    /work/peers-venv/bin/python benchmarks/peer_torch.py [WORKLOAD...] [--seconds 2]

Threads as PyTorch comes; ``OMP_NUM_THREADS=1`` holds it to one (``compare_peers.py`` runs
both).
"""

from __future__ import annotations

import argparse

import _workloads
import torch
from torch import nn


class LastStep(nn.Module):
    """A recurrent layer over (batch, steps, 1) inputs, its last step's state -> fc10."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell(1, 128, batch_first=True)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        states, _ = self.cell(x)
        return self.out(states[:, -1])


def model(name: str) -> nn.Module:
    if name == "mlp-small":
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if name == "rnn":
        return LastStep(nn.RNN)
    if name == "lstm":
        return LastStep(nn.LSTM)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 32), nn.ReLU(),
                         nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid())


def steps_per_second(name: str, seconds: float) -> float:
    shape, batch, loss, _ = _workloads.WORKLOADS[name]
    torch.manual_seed(0)
    net = model(name)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, *shape)
    target = torch.randint(0, 10, (batch,)) if loss == "ce" else x
    criterion = nn.CrossEntropyLoss() if loss == "ce" else nn.MSELoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(net(x), target).backward()
        optimizer.step()

    return _workloads.time_steps(step, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    for name in _workloads.names(args.workloads):
        _workloads.report(name, "torch", steps_per_second(name, args.seconds))


if __name__ == "__main__":
    main()
