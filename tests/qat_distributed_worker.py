"""Run by test_qat.py under torchrun: a prepared model trained with DistributedDataParallel on 2 CPU
processes, each with its own data (rank 1's 10x larger); each rank writes its activation ranges."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from eightbit import qat


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def ranges(model: nn.Module) -> dict[str, list[float]]:
    return {name: [float(m.low), float(m.high)] for name, m in model.named_modules() if hasattr(m, "low")}


def train(model: nn.Module, rank: int, steps: int = 4) -> None:
    generator = torch.Generator().manual_seed(rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=generator) * (10.0 if rank == 1 else 1.0)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()


def main() -> None:
    out = Path(sys.argv[1])
    if os.environ["RANK"] == "0":  # the same on rank 0's data alone, without the process group
        torch.manual_seed(0)
        alone = qat.prepare(Small(), (torch.ones(1, 1, 8, 8),))
        train(alone, 0)
        (out / "alone.json").write_text(json.dumps(ranges(alone)))
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    prepared = qat.prepare(Small(), (torch.ones(1, 1, 8, 8),))
    train(DistributedDataParallel(prepared), rank)
    (out / f"rank{rank}.json").write_text(json.dumps(ranges(prepared)))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
