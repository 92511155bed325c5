"""The customised GAN-CLS of the seed document (Reed et al. 2016 with residual blocks).

Generator G(z, psi(t)):
    psi(t) (1024) -> Linear -> LeakyReLU  = 128-d text code, concatenated with z ~ N(0, I) (128)
    -> linear projection to 4x4x(ngf*8) -> residual block
    -> deconv to 8x8x(ngf*4) -> residual block
    -> deconv 16x16x(ngf*2) -> deconv 32x32x(ngf) -> deconv 64x64x3 -> tanh
    every deconvolution followed by BatchNorm and LeakyReLU, except the last.

Discriminator D(x, psi(t)):
    x (64x64x3) -> stride-2 convolutions 32 -> 16 -> 8 -> 4 (ndf .. ndf*8 channels) -> residual block
    psi(t) -> Linear -> BatchNorm -> LeakyReLU = 128-d code, replicated spatially to 4x4,
    concatenated in depth -> 1x1 conv (ndf*8) -> 4x4 conv -> one logit.
    D returns the logit; sigmoid(logit) is the probability that (x, t) is a real, matching pair.
    The losses use the numerically stable BCE-with-logits, which is BCE after the sigmoid.

The number of residual blocks (two in G, one in D in the seed) is ``model.g_res_blocks`` and
``model.d_res_blocks`` in params.yaml.  ``model.g_upsample`` picks how G doubles its resolution: the
seed's stride-2 deconvolutions (``deconv``), or nearest-neighbour upsampling then a 3x3 convolution
(``nearest``), which does not leave the checkerboard pattern of a 4x4 stride-2 deconvolution (Odena
et al. 2016), or bilinear upsampling then a 3x3 convolution (``bilinear``: no 2x2 blocks either).

A departure the seed does not make, on when ``model.cond_aug`` is true (the sample's default; off in
``configs/reed_cub.yaml``): StackGAN's conditioning augmentation.  G's text projection then gives a mean and a log-variance (1024 -> 2 x 128, LeakyReLU)
and, in training, the 128-d code is drawn as ``mu + sigma * eps``; G also returns
``KL(N(mu, sigma^2) || N(0, I))`` (mean over dimensions) for its loss (``train.kl_weight``).  In eval
mode the code is ``mu``, so a drawn image depends on (z, text) alone.

A second departure, on when ``model.d_projection`` is true (the sample's default; off in
``configs/reed_cub.yaml``): Miyato & Koyama's projection term, D's
logit plus the inner product of a linear map of psi(t) (1024 -> ndf*8) with the 4x4 features
averaged over positions, so D scores how well the image's features agree with the text directly.
Averaged, not summed as in Miyato's spectrally normalised D: without spectral norm the sum started
with losses in the tens, and each Adam step moves a summed term 16 times as far (measured: text_match
0.55 against 0.45 at seed 0; docs/SCORES.md "Does the noise matter?").

A third option for G, on when ``model.g_skip_rgb`` is true (not in the seed; StyleGAN2's "skip"
generator, Karras et al. 2020): 1x1 convolutions also turn the 16x16 and 32x32 features into RGB, and
G's picture is the sum of these, each doubled bilinearly up to 64x64, and the last layer's, before the
tanh; so the coarse layers draw the colours and the fine ones add only edges.

A fourth option for G, on when ``model.g_cond_norm`` is true (not in the seed; BigGAN's conditional
BatchNorm, Brock et al. 2019, as DF-GAN fuses the sentence into every stage): the BatchNorm after the
projection and after each doubling has no learnt scale and shift of its own; both are linear in
(z, text code), so the text reaches every resolution, not only the 4x4 input.

A fifth option, for D, on when ``model.d_uncond`` (the weight of its terms) is above 0 (not in the seed;
StackGAN++'s joint conditional and unconditional D, Zhang et al. 2018): a second 4x4 convolution on the
image features alone gives a realism logit that no text enters, trained as an unconditional GAN beside the GAN-CLS
terms, so D's judgement of realism is not only the part of its pair score that the text leaves. With
``model.d_uncond_features: own`` (the sample's default) that logit reads an image tower of its own, the
shape of D's (``model.d_uncond_ndf`` wide), which the pair terms never train.

``model.d_norm`` picks D's normalisation: the seed's BatchNorm (``batch``), or spectral
normalisation (Miyato et al. 2018) of every convolution and linear map of D with no BatchNorm
(``spectral``; paired with the hinge loss, ``train.loss``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelParams


def _norm(channels: int, norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm else nn.Identity()


class ResidualBlock(nn.Module):
    """Bottleneck residual block: 1x1 -> 3x3 -> 3x3 convolutions with BatchNorm (``norm``), identity skip."""

    def __init__(self, channels: int, leak: float, norm: bool = True):
        super().__init__()
        inner = max(channels // 4, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=not norm),
            _norm(inner, norm),
            nn.LeakyReLU(leak, inplace=True),
            nn.Conv2d(inner, inner, 3, padding=1, bias=not norm),
            _norm(inner, norm),
            nn.LeakyReLU(leak, inplace=True),
            nn.Conv2d(inner, channels, 3, padding=1, bias=not norm),
            _norm(channels, norm),
        )
        self.act = nn.LeakyReLU(leak, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def _double(cin: int, cout: int, how: str, bias: bool) -> list[nn.Module]:
    """Twice the resolution: a stride-2 deconvolution, or nearest-neighbour (or bilinear) upsampling then a
    3x3 convolution."""
    if how in ("nearest", "bilinear"):
        up = nn.Upsample(scale_factor=2, mode=how, **({"align_corners": False} if how == "bilinear" else {}))
        return [up, nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]
    return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)]


class CondBatchNorm(nn.Module):
    """BatchNorm without affine parameters, then a scale (1 + gamma) and shift (beta) that a linear map
    computes from the condition (``model.g_cond_norm``; BigGAN's conditional BatchNorm)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.affine = nn.Linear(cond_dim, 2 * channels)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(cond)[:, :, None, None].chunk(2, dim=1)
        return self.norm(h) * (1 + gamma) + beta


def _bn(channels: int, cond_dim: int) -> nn.Module:
    return CondBatchNorm(channels, cond_dim) if cond_dim else nn.BatchNorm2d(channels)


def _up(cin: int, cout: int, leak: float, how: str = "deconv", cond_dim: int = 0) -> list[nn.Module]:
    return [*_double(cin, cout, how, bias=False), _bn(cout, cond_dim), nn.LeakyReLU(leak, inplace=True)]


def _run(layers, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """``layers`` in turn; the conditional BatchNorms among them also read ``cond``."""
    for layer in layers:
        h = layer(h, cond) if isinstance(layer, CondBatchNorm) else layer(h)
    return h


def _down(cin: int, cout: int, leak: float, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(leak, inplace=True))
    return layers


def _check_size(image_size: int) -> None:
    if image_size != 64:
        raise ValueError(f"model.image_size must be 64 (the GAN-CLS resolution), got {image_size}")


class Generator(nn.Module):
    def __init__(
        self,
        z_dim=128,
        embedding_dim=1024,
        text_dim=128,
        ngf=128,
        res_blocks=2,
        leak=0.2,
        image_size=64,
        cond_aug=False,
        upsample="deconv",
        skip_rgb=False,
        cond_norm=False,
    ):
        super().__init__()
        _check_size(image_size)
        self.z_dim = z_dim
        self.ngf = ngf
        self.cond_aug = cond_aug
        self.cond_norm = cond_norm
        cond = z_dim + text_dim if cond_norm else 0  # g_cond_norm: the BatchNorms' scale and shift from (z, code)
        code = 2 * text_dim if cond_aug else text_dim  # conditioning augmentation: mean and log-variance
        self.text = nn.Sequential(nn.Linear(embedding_dim, code), nn.LeakyReLU(leak, inplace=True))
        self.project = nn.Linear(z_dim + text_dim, ngf * 8 * 4 * 4, bias=False)
        self.project_norm = nn.Sequential(_bn(ngf * 8, cond), nn.LeakyReLU(leak, inplace=True))
        # Residual blocks go at 4x4 then 8x8 (the seed's two); extra ones repeat at 8x8.
        blocks_4 = [ResidualBlock(ngf * 8, leak) for _ in range(min(res_blocks, 1))]
        blocks_8 = [ResidualBlock(ngf * 4, leak) for _ in range(max(res_blocks - 1, 0))]
        to_16 = [
            *blocks_4,
            *_up(ngf * 8, ngf * 4, leak, upsample, cond),
            *blocks_8,
            *_up(ngf * 4, ngf * 2, leak, upsample, cond),
        ]
        to_32 = _up(ngf * 2, ngf, leak, upsample, cond)
        self.body = nn.Sequential(
            *to_16,  # 8x8, then 16x16
            *to_32,  # 32x32
            *_double(ngf, 3, upsample, bias=True),  # 64x64
            nn.Tanh(),
        )
        # g_skip_rgb: the body's outputs at 16x16 and 32x32 (layer indices) and their 1x1 convolutions to RGB
        self.taps = (len(to_16) - 1, len(to_16) + len(to_32) - 1) if skip_rgb else ()
        self.to_rgb = nn.ModuleList([nn.Conv2d(ngf * 2, 3, 1), nn.Conv2d(ngf, 3, 1)]) if skip_rgb else None

    def forward(self, z: torch.Tensor, embedding: torch.Tensor, with_kl: bool = False):
        """The images for noise ``z`` and text ``embedding``; with ``with_kl``, (images, KL term)."""
        code = self.text(embedding)
        kl = code.new_zeros(())
        if self.cond_aug:
            mu, logvar = code.chunk(2, dim=1)
            code = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()
        cond = torch.cat([z, code], dim=1)
        h = self.project(cond).view(-1, self.ngf * 8, 4, 4)
        images = self._draw(_run(self.project_norm, h, cond), cond)
        return (images, kl) if with_kl else images

    def _draw(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if not self.taps:
            return _run(self.body, h, cond) if self.cond_norm else self.body(h)
        rgb = None
        for i, layer in enumerate(self.body[:-1]):  # all but the tanh
            h = _run([layer], h, cond)
            if i in self.taps:
                here = self.to_rgb[self.taps.index(i)](h)
                rgb = here if rgb is None else _twice(rgb) + here
        return self.body[-1](h + _twice(rgb))


def _twice(rgb: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)


class Discriminator(nn.Module):
    def __init__(
        self,
        embedding_dim=1024,
        text_dim=128,
        ndf=64,
        res_blocks=1,
        leak=0.2,
        image_size=64,
        projection=False,
        norm="batch",
        uncond=False,
        uncond_features="shared",
        uncond_ndf=None,
    ):
        super().__init__()
        _check_size(image_size)
        bn = norm == "batch"  # spectral: no BatchNorm; every weight spectrally normalised (spectral_norm)
        self.image = _image_tower(ndf, res_blocks, leak, bn)
        self.text = nn.Sequential(
            nn.Linear(embedding_dim, text_dim),
            nn.BatchNorm1d(text_dim) if bn else nn.Identity(),
            nn.LeakyReLU(leak, inplace=True),
        )
        self.joint = nn.Sequential(
            nn.Conv2d(ndf * 8 + text_dim, ndf * 8, 1, bias=not bn),
            _norm(ndf * 8, bn),
            nn.LeakyReLU(leak, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4),
        )
        # Miyato & Koyama's projection: + <W psi(t), mean of the 4x4 features> (``model.d_projection``).
        self.projection = nn.Linear(embedding_dim, ndf * 8, bias=False) if projection else None
        # StackGAN++'s unconditional logit from the image features alone (``model.d_uncond``); with
        # ``model.d_uncond_features: own`` from a tower of its own, which the pair terms never train.
        # (``model.d_uncond_ndf``: that tower's width, ndf unless set)
        own = uncond and uncond_features == "own"
        rdf = (uncond_ndf or ndf) if own else ndf
        self.realism = nn.Conv2d(rdf * 8, 1, 4) if uncond else None
        self.realism_image = _image_tower(rdf, res_blocks, leak, bn) if own else None
        self.norm = norm

    def judge(self, features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The logit for image features (``self.image(x)``, 4x4) paired with a text embedding."""
        t = self.text(embedding)[:, :, None, None].expand(-1, -1, features.shape[2], features.shape[3])
        logit = self.joint(torch.cat([features, t], dim=1)).view(-1)
        if self.projection is not None:
            logit = logit + (self.projection(embedding) * features.mean(dim=(2, 3))).sum(dim=1)
        return logit

    def forward(
        self,
        image: torch.Tensor,
        *embeddings: torch.Tensor,
        rows: torch.Tensor | None = None,
        realism: bool = False,
        realism_view: torch.Tensor | None = None,
    ):
        """The logit for ``image`` paired with each text; one text gives one tensor, several a tuple.

        Several texts share one pass of the image tower (GAN-CLS judges the same real images with
        the right and a wrong text).  With ``rows`` (one text, a row per pair): the logit of text
        ``i`` with image ``rows[i]``, so real and fake images go through the tower in one batch.
        With ``realism`` (``model.d_uncond``): (those logits, each image's unconditional logit); a tower
        of its own reads ``realism_view`` where given (training passes an augmented copy of ``image``).
        """
        h = self.image(image)
        if rows is not None:
            logits = self.judge(h.index_select(0, rows), *embeddings)
        else:
            logits = tuple(self.judge(h, e) for e in embeddings)
            logits = logits[0] if len(logits) == 1 else logits
        if not realism:
            return logits
        if self.realism_image is None:
            return logits, self.realism(h).view(-1)
        view = image if realism_view is None else realism_view
        return logits, self.realism(self.realism_image(view)).view(-1)


def _image_tower(ndf: int, res_blocks: int, leak: float, bn: bool) -> nn.Sequential:
    """D's image features: 64x64 RGB down to ndf * 8 channels at 4x4."""
    return nn.Sequential(
        *_down(3, ndf, leak, norm=False),  # 32x32
        *_down(ndf, ndf * 2, leak, bn),  # 16x16
        *_down(ndf * 2, ndf * 4, leak, bn),  # 8x8
        *_down(ndf * 4, ndf * 8, leak, bn),  # 4x4
        *[ResidualBlock(ndf * 8, leak, bn) for _ in range(res_blocks)],
    )


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights N(0, 0.02), BatchNorm gamma N(1, 0.02), beta 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalise every convolution and linear map in ``module`` (one power iteration per
    training forward pass); call after ``init_weights``, which writes the weights it normalises."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)
    return module


def build_generator(cfg: ModelParams) -> Generator:
    """G from the ``model:`` section of params.yaml (not initialised)."""
    return Generator(
        cfg.z_dim,
        cfg.embedding_dim,
        cfg.text_dim,
        cfg.ngf,
        cfg.g_res_blocks,
        cfg.leak,
        cfg.image_size,
        cfg.cond_aug,
        cfg.g_upsample,
        cfg.g_skip_rgb,
        cfg.g_cond_norm,
    )


def build_models(cfg: ModelParams) -> tuple[Generator, Discriminator]:
    """G and D from the ``model:`` section of params.yaml, initialised."""
    g = build_generator(cfg)
    d = Discriminator(
        cfg.embedding_dim,
        cfg.text_dim,
        cfg.ndf,
        cfg.d_res_blocks,
        cfg.leak,
        cfg.image_size,
        cfg.d_projection,
        cfg.d_norm,
        cfg.d_uncond > 0,
        cfg.d_uncond_features,
        cfg.d_uncond_ndf,
    )
    g.apply(init_weights)
    d.apply(init_weights)
    if cfg.d_norm == "spectral":
        spectral_norm(d)
    return g, d
