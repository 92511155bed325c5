"""The training step recorded once as a CUDA graph and replayed (``train.cuda_graph``)."""

from __future__ import annotations

import torch


class GraphedStep:
    """``train_step`` recorded once as a CUDA graph and replayed (``train.cuda_graph``).

    A step launches hundreds of small kernels; on a GPU their launch cost, not the arithmetic, bounds
    the speed.  The first ``warmup`` calls run eagerly on a side stream (cuDNN picks its algorithms),
    the next records the whole step -- both forward passes, both backward passes, both Adam updates
    (``capturable=True``, lr as a device tensor so the scheduler still works) -- and every call then
    copies its batch into the recorded input tensors and replays the graph.  Random draws inside
    (z) advance with every replay.
    """

    def __init__(self, step, warmup: int = 3):
        self.step, self.warmup = step, warmup
        self.calls = 0
        self.graph = self.inputs = self.out = None

    def __call__(self, real, text, wrong) -> torch.Tensor:
        self.calls += 1
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(real, text, wrong)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.inputs = [t.clone() for t in (real, text, wrong)]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.step(*self.inputs)
        else:
            for dst, src in zip(self.inputs, (real, text, wrong)):
                dst.copy_(src)
        self.graph.replay()
        return self.out.clone()
