"""The adversarial losses and D's gradient penalties that ``train_step`` can use (``train.loss``,
``train.penalty``).  Everything here runs in fp32, whatever precision the passes ran in.

Losses, with D's three GAN-CLS terms (real/right, real/wrong, fake/right) weighted as in Reed's
Algorithm 1 (``wrong_weight`` for the wrong text, 1/2 for the fake):
    bce    (the seed):  D: BCE(s_real, 1) + w BCE(s_wrong, 0) + 1/2 BCE(s_fake, 0);   G: BCE(s, 1)
    hinge  (Miyato et al. 2018, with spectral norm in D, ``model.d_norm``):
                        D: relu(1 - s_real) + w relu(1 + s_wrong) + 1/2 relu(1 + s_fake);   G: -s

With ``model.d_uncond`` (StackGAN++), D's image-only realism logits add an unconditional GAN of the
same kind, real -> real and fake -> fake at full weight (``realism``), and G's loss on them to G's.

Penalties on real images with their own text, applied lazily: every ``every`` D steps, weighted by
``every`` (the same expected strength at 1/every of the cost, as StyleGAN2's lazy R1):
    r1    (Mescheder et al. 2018):  weight/2 * E ||grad_x D(x, t)||^2
    magp  (DF-GAN's matching-aware penalty, Tao et al. 2022):  weight * E ||grad_(x, t) D(x, t)||^p,
          the gradient over the image and the sentence embedding together (DF-GAN: weight 2, p 6)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "hinge")
PENALTIES = ("none", "r1", "magp")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float))


def d_loss(kind: str, s_real, s_wrong, s_fake, wrong_weight: float) -> torch.Tensor:
    """D's GAN-CLS loss from its logits for real/right, real/wrong and fake/right pairs."""
    if kind == "hinge":
        return (
            F.relu(1 - s_real.float()).mean()
            + wrong_weight * F.relu(1 + s_wrong.float()).mean()
            + 0.5 * F.relu(1 + s_fake.float()).mean()
        )
    return _bce(s_real, 1.0) + wrong_weight * _bce(s_wrong, 0.0) + 0.5 * _bce(s_fake, 0.0)


def realism(kind: str, r_real, r_fake) -> torch.Tensor:
    """D's unconditional loss from its image-only logits for real and fake images (``model.d_uncond``)."""
    if kind == "hinge":
        return F.relu(1 - r_real.float()).mean() + F.relu(1 + r_fake.float()).mean()
    return _bce(r_real, 1.0) + _bce(r_fake, 0.0)


def g_loss(kind: str, s_fake) -> torch.Tensor:
    """G's loss from D's logits for its images with the text they were drawn for."""
    return -s_fake.float().mean() if kind == "hinge" else _bce(s_fake, 1.0)


def fooled(kind: str, out, uncond: float = 0.0) -> torch.Tensor:
    """G's loss on D's output for its images: the pair term, plus ``uncond`` times the realism term when D
    also gave realism logits (``model.d_uncond``: ``out`` is then (pair logits, realism logits))."""
    scores, r = out if isinstance(out, tuple) else (out, None)
    return g_loss(kind, scores) + uncond * g_loss(kind, r) if uncond and r is not None else g_loss(kind, scores)


def penalty(kind: str, d, real: torch.Tensor, text: torch.Tensor, weight: float, power: float) -> torch.Tensor:
    """D's gradient penalty on real images with their own text (fp32, outside autocast)."""
    x = real.detach().float().requires_grad_(True)
    t = text.detach().float().requires_grad_(kind == "magp")
    with torch.autocast(real.device.type, enabled=False):
        score = d(x, t).float().sum()
    if kind == "r1":
        (gx,) = torch.autograd.grad(score, x, create_graph=True)
        return 0.5 * weight * gx.pow(2).flatten(1).sum(1).mean()
    gx, gt = torch.autograd.grad(score, (x, t), create_graph=True)
    norm = torch.cat([gx.flatten(1), gt.flatten(1)], dim=1).norm(dim=1)
    return weight * norm.pow(power).mean()
