"""Where and how the network runs: the device and its random state, the precision, the memory layout,
the CPU allocator, and batched inference."""

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


def cpuinfo(field):
    """A field of the first processor in /proc/cpuinfo ("model name", "vendor_id", "flags"), or "" where
    the system has no such file (it is Linux's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name():
    """The processor's model name, for benchmark reports (seconds mean little without it)."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor():
    """The vendor as the CPU names itself (AuthenticAMD, GenuineIntel, ...), or "" where the system does not say."""
    return cpuinfo("vendor_id")


def cpu_has_amx():
    """Whether this CPU has AMX tiles, the matrix units that make bf16 much faster than fp32."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def cpu_has_native_bf16():
    """Whether this CPU multiplies bf16 with instructions of its own: AVX512-BF16 or AMX on x86, the BF16
    extension on Arm. torch's mkldnn check also says yes to x86 CPUs with AVX-512 but neither (Skylake,
    Cascade Lake), where oneDNN emulates bf16."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or cpu_has_amx()


def cpu_trains_faster_in_bf16():
    """(bool, why), from the three kinds of CPU measured (docs/results.md): with AMX (an Intel Xeon) a
    training step ran 1.9x as fast in bf16; on an AMD EPYC with AVX512-BF16 (Zen 4) a 2048x2048 matmul ran
    2.3x as fast as in fp32, and a step 1.6-1.8x; on an Intel Xeon with AVX512-BF16 but no AMX the matmul ran
    at half its fp32 rate, and a step 1.5x slower."""
    if cpu_has_amx():
        return True, "this CPU has AMX"
    if cpu_vendor() == "AuthenticAMD" and cpu_has_native_bf16():  # AMD has no AMX: this is AVX512-BF16
        return True, "this AMD CPU has AVX512-BF16, where bf16 multiplies about twice as fast as fp32"
    if cpu_has_native_bf16():
        return False, "this CPU has bf16 instructions but no AMX, where bf16 ran slower than fp32 on the Xeon measured"
    return False, "this CPU has no native bf16"


def pick_precision(name, device):
    """(precision, reason): "bf16" (autocast; weights, optimizer state and the loss stay fp32) or "fp32".

    `auto` takes bf16 where the hardware multiplies bf16 natively and faster: CUDA GPUs that support it,
    CPUs with AMX, and AMD CPUs with AVX512-BF16 (see cpu_trains_faster_in_bf16).
    """
    device = torch.device(device)
    if device.type == "cuda":
        native, why = torch.cuda.is_bf16_supported(), "this GPU"
    elif device.type == "cpu":
        native, why = cpu_trains_faster_in_bf16()
    else:
        native, why = False, f"bf16 is not tried on {device.type}"
    if name == "auto":
        return ("bf16" if native else "fp32"), f"auto: {why}"
    if name == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise RunError("--precision bf16 was asked for, but this CPU has no bf16 instructions (it would be "
                       "emulated, many times slower); use --precision auto or fp32")
    return name, "asked for"


def rng_state(device):
    """The random state training draws from (dropout's masks): torch's CPU generator, and the GPU's own
    when training runs on one, so that a resumed run draws the same masks as a straight one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state, device):
    """Put back what rng_state saved; a GPU's part only applies on that kind of device."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


def autocast(device, precision):
    """The context that runs the forward pass in `precision` on `device` (a no-op for fp32)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def memory_format(device):
    """oneDNN's CPU convolutions are fastest on channels-last (NHWC) tensors; GPUs take the default."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not Linux, or not glibc: nothing to tune
        return None


def flush_denormals():
    """Treat float32 numbers below its smallest normal one (about 1e-38) as zero on the CPU.

    Adam's running means of units that stop getting gradient decay into that range, where every
    operation on them costs many times more: after 20 epochs a quarter to a half of them are there, and
    late epochs ran a quarter to a third slower than the first (twice as slow with batches of 64).
    torch's worker threads take the setting from the thread that starts them, so call this before
    torch's first parallel operation.
    """
    torch.set_flush_denormal(True)


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
def logits_of(model, x, precision="fp32", batch_size=500, dataset=None):
    """Logits [N, 10] (float32, on x's device), in eval mode, for normalized inputs x [N, 1, 28, 28] or, given
    their `dataset`, its uint8 images [N, 28, 28]; the model may sit on another device. `batch_size` at a
    time, each normalized as it goes: the first convolution's output alone is 100 KB an image."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for batch in x.split(batch_size):
        if dataset is not None:
            batch = data.normalize(batch, dataset)
        batch = batch.to(device).contiguous(memory_format=memory_format(device))
        with autocast(device, precision):
            outputs.append(model(batch).float().to(x.device))
    return torch.cat(outputs)


def probabilities(model, x, precision="fp32", temperature=1.0):
    """Softmax probabilities [N, 10] of logits / temperature, on x's device, for normalized inputs x
    [N, 1, 28, 28]."""
    return (logits_of(model, x, precision) / temperature).softmax(1)
