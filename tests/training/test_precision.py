"""train.precision: auto resolves to bf16 where the hardware computes it (gancls.training.precision)."""

import torch

from gancls.training import precision


def test_auto_precision_is_bf16_where_the_hardware_computes_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert precision.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: as asked
    assert precision.resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_this_machines_cpu_flags_are_read():
    """/proc/cpuinfo is read (every machine of the project has AVX512-BF16): not a check that cannot fail."""
    flags = open("/proc/cpuinfo").read()
    assert precision.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
