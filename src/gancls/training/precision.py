"""``train.precision``: which arithmetic a training step runs in.

``auto`` (bf16 where the hardware computes it) resolves here; the step itself (``train.train_step``)
runs its passes under bfloat16 autocast for ``bf16`` and keeps the losses and statistics in fp32.
"""

from __future__ import annotations

import re
from pathlib import Path


def cpu_has_bf16() -> bool:
    """The CPU computes bfloat16 natively (AVX512-BF16 or AMX), as Linux's /proc/cpuinfo says."""
    try:
        return re.search(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()) is not None
    except OSError:
        return False


def resolve_precision(name: str, device) -> str:
    """``auto`` is bf16 autocast on CUDA devices that have bfloat16 and on CPUs that compute it natively
    (``cpu_has_bf16``), fp32 elsewhere; ``fp32`` and ``bf16`` are themselves."""
    if name != "auto":
        return name
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
