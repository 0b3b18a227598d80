"""Where and how the network runs: the device, its memory layout, the CPU allocator, batched inference."""

import ctypes
import platform
from pathlib import Path

import torch

import data
from cli import RunError


def pick_device(name="auto"):
    """The torch device to use: `auto` takes CUDA, then Apple's MPS, then the CPU."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise RunError(f"--device {name} was asked for, but this machine has none; use --device auto or cpu")
    return torch.device(name)


def cpu_name():
    """The processor's model name, for benchmark reports (seconds mean little without it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_format(device):
    """oneDNN's CPU convolutions are fastest on channels-last (NHWC) tensors; GPUs take the default."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not Linux, or not glibc: nothing to tune
        return None


def keep_freed_memory_mapped():
    """Stop glibc from handing big freed blocks back to the OS after every step.

    Otherwise each step's activations are page-faulted in afresh, which costs about a fifth of a CPU
    training step here.
    """
    libc = _glibc()
    if libc is not None:
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)


def release_freed_memory():
    """Give the memory kept by keep_freed_memory_mapped back to the OS (once training is over)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@torch.inference_mode()
def predict_logits(model, images, batch_size=250):
    """Logits [N, 10] (float32) for uint8 images [N, 28, 28], computed in order, in eval mode."""
    model.eval()
    layout = memory_format(images.device)
    outputs = []
    for x, _ in data.batches(images, images.new_zeros(len(images)), batch_size):
        outputs.append(model(x.contiguous(memory_format=layout)).float())
    return torch.cat(outputs)
