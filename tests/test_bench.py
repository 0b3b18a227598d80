"""benchmarks/bench.py: the FLOP count that every ratio to the floor rests on."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench  # noqa: E402

from model import CNN  # noqa: E402


def test_forward_flops_are_counted_from_the_layers():
    # By hand: conv1 28*28*32*(1*9), conv2 14*14*64*(32*9), then 3136*1000, 1000*100, 100*10 multiply-adds.
    macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 3136 * 1000 + 1000 * 100 + 100 * 10
    assert bench.forward_flops_per_image(CNN()) == 2 * macs == 14_150_928
