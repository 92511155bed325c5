"""The adversarial losses and D's gradient penalties (training/losses.py), and the lazy penalty of make_step."""

import pytest
import torch
from torch import nn

from gancls.training.losses import d_loss, g_loss, penalty


def test_hinge_and_bce_losses_have_their_textbook_values():
    s_real, s_wrong, s_fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0]), torch.tensor([0.0, -0.5])
    hinge = d_loss("hinge", s_real, s_wrong, s_fake, wrong_weight=0.5)
    # relu(1 - s_real) = [0, 0.5]; relu(1 + s_wrong) = [0, 1]; relu(1 + s_fake) = [1, 0.5]
    assert hinge.item() == pytest.approx(0.25 + 0.5 * 0.5 + 0.5 * 0.75)
    assert g_loss("hinge", s_fake).item() == pytest.approx(0.25)
    log2 = torch.log(torch.tensor(2.0)).item()
    zeros = torch.zeros(3)
    assert d_loss("bce", zeros, zeros, zeros, wrong_weight=0.5).item() == pytest.approx(2 * log2)
    assert g_loss("bce", zeros).item() == pytest.approx(log2)
    assert d_loss("bce", s_real.bfloat16(), s_wrong, s_fake, 0.5).dtype == torch.float32  # fp32 under bf16


class Linear(nn.Module):
    """D(x, t) = <a, x> + <b, t>: its gradient is (a, b) everywhere."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)

    def forward(self, x, t):
        return (x.flatten(1) * self.a).sum(1) + (t * self.b).sum(1)


def test_penalties_are_the_gradient_norms_they_name():
    a, b = torch.full((3 * 2 * 2,), 0.5), torch.tensor([3.0, 4.0])  # |a|^2 = 3, |b|^2 = 25
    d = Linear(a, b)
    x, t = torch.randn(4, 3, 2, 2), torch.randn(4, 2)
    assert penalty("r1", d, x, t, weight=2.0, power=6).item() == pytest.approx(0.5 * 2.0 * 3.0)
    assert penalty("magp", d, x, t, weight=2.0, power=6).item() == pytest.approx(2.0 * 28.0**3, rel=1e-5)
    # the penalty trains D: its gradient reaches D's weights (a double backward)
    penalty("magp", d, x, t, 2.0, 6).backward()
    assert d.a.grad.abs().sum() > 0 and d.b.grad.abs().sum() > 0


def test_make_step_applies_the_penalty_lazily_and_stronger(monkeypatch):
    from gancls.training import train as train_module

    from conftest import section

    seen = []
    monkeypatch.setattr(train_module, "train_step", lambda *a, **kw: seen.append(kw["penalty_weight"]))
    mcfg = section("model", ngf=4, ndf=4)
    tcfg = section("train", penalty="magp", penalty_weight=2.0, penalty_every=4)
    step = train_module.make_step(nn.Linear(1, 1), None, None, None, mcfg, tcfg, graphed=False)
    for _ in range(8):
        step(None, None, None)
    assert seen == [0.0, 0.0, 0.0, 8.0, 0.0, 0.0, 0.0, 8.0]  # every 4th step, 4 times as strong
