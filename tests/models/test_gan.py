from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from gancls.models.gan import Discriminator, Generator, ResidualBlock, build_models

from conftest import section


def count(m):
    return sum(p.numel() for p in m.parameters())


def cub_settings() -> dict:
    """The ``key=value`` overrides of ``make run-cub`` (configs/reed_cub.yaml)."""
    from gancls.runs.experiment import settings_file

    return dict(s.split("=", 1) for s in settings_file(Path(__file__).parents[2] / "configs/reed_cub.yaml"))


def test_seed_architecture_sizes_are_one_command_away():
    # REFERENCE.md §1/§5: seed-sized G 19.36 M parameters with ngf 128, D 4.03 M with ndf 64,
    # which `make run-cub` (Reed's configuration) sets on top of params.yaml.
    settings = cub_settings()
    model = section(
        "model", **{k.split(".", 1)[1]: yaml.safe_load(v) for k, v in settings.items() if k.startswith("model.")}
    )
    assert model.cond_aug is False and settings["train.mode_seeking"] == "0.0"  # Reed's: the seed's loss
    assert model.d_projection is False and model.d_uncond == 0  # and the seed's D: pairs only
    assert model.g_upsample == "deconv"  # and the seed's deconvolutions
    assert (model.ngf, model.ndf) == (128, 64)
    assert settings["train.batch_size"] == "64" and settings["train.epochs"] == "600"
    assert settings["train.lr"] == "0.0002" and settings["train.beta1"] == "0.5"  # Reed's Adam (2e-4, 0.5)
    g, d = build_models(model)
    assert model.z_dim == 128 and model.text_dim == 128
    assert count(g) == 19_364_227
    assert count(d) == 4_030_145
    assert sum(isinstance(m, ResidualBlock) for m in g.modules()) == 2
    assert sum(isinstance(m, ResidualBlock) for m in d.modules()) == 1


def test_shapes_and_ranges():
    g = Generator(ngf=8, res_blocks=2)
    d = Discriminator(ndf=8, res_blocks=1)
    z, e = torch.randn(5, 128), torch.randn(5, 1024)
    x = g(z, e)
    assert x.shape == (5, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x, e).shape == (5,)


def test_text_conditions_both_networks():
    torch.manual_seed(0)
    g, d = Generator(ngf=8).eval(), Discriminator(ndf=8).eval()
    z = torch.randn(2, 128)
    e1, e2 = torch.randn(2, 1024), torch.randn(2, 1024)
    assert not torch.allclose(g(z, e1), g(z, e2))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert not torch.allclose(d(x, e1), d(x, e2))


def test_init_follows_dcgan():
    cfg = section("model", ngf=16, ndf=16)
    g, _ = build_models(cfg)
    convs = torch.cat(
        [m.weight.flatten() for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    )
    assert abs(convs.std().item() - 0.02) < 0.002
    gammas = torch.cat([m.weight for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(gammas.mean().item() - 1.0) < 0.01


def test_only_64px_supported():
    with pytest.raises(ValueError, match="64"):
        Generator(image_size=128)


def test_conditioning_augmentation_draws_the_text_code_in_training_only():
    """StackGAN's CA (model.cond_aug): the code is mu + sigma * eps in training, mu in eval; KL >= 0."""
    torch.manual_seed(0)
    g = Generator(z_dim=8, text_dim=16, ngf=8, res_blocks=1, cond_aug=True)
    z, e = torch.randn(4, 8), torch.randn(4, 1024)
    g.train()
    a, kl = g(z, e, with_kl=True)
    b = g(z, e)
    assert not torch.equal(a, b) and float(kl) >= 0  # another draw of the code, same z and text
    g.eval()
    assert torch.equal(g(z, e), g(z, e))
    plain = Generator(z_dim=8, text_dim=16, ngf=8, res_blocks=1)
    assert plain.text[0].out_features == 16 and g.text[0].out_features == 32
    assert float(plain(z, e, with_kl=True)[1]) == 0.0


def test_projection_adds_the_inner_product_of_text_and_pooled_features():
    """model.d_projection: D's logit + <W psi(t), mean of the 4x4 features> (Miyato & Koyama 2018)."""
    torch.manual_seed(0)
    d = Discriminator(ndf=8, projection=True).eval()
    x, e = torch.rand(3, 3, 64, 64) * 2 - 1, torch.randn(3, 1024)
    h = d.image(x)
    with torch.no_grad():
        joint_only = d.joint(torch.cat([h, d.text(e)[:, :, None, None].expand(-1, -1, 4, 4)], 1)).view(-1)
        expected = joint_only + (d.projection(e) * h.mean(dim=(2, 3))).sum(1)
        assert torch.allclose(d(x, e), expected, atol=1e-5)
        assert not torch.allclose(d(x, e), joint_only, atol=1e-3)  # the term is not zero
    assert Discriminator(ndf=8).projection is None  # off: the seed's D, same parameters as before
    assert count(Discriminator(ndf=8, projection=True)) == count(Discriminator(ndf=8)) + 1024 * 64


def test_nearest_upsampling_draws_64px_without_deconvolutions():
    """``model.g_upsample: nearest``: nearest-neighbour doubling then a 3x3 convolution at each of G's four
    doublings, the same output, no transposed convolution left (their checkerboard pattern)."""
    model = section("model", ngf=8, g_upsample="nearest")
    g, _ = build_models(model)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert sum(isinstance(m, torch.nn.Upsample) for m in g.modules()) == 4
    z, e = torch.randn(2, model.z_dim), torch.randn(2, model.embedding_dim)
    with torch.no_grad():
        out = g.eval()(z, e)
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1
    deconv, _ = build_models(section("model", ngf=8, g_upsample="deconv"))
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in deconv.modules()) == 4
    bilinear, _ = build_models(section("model", ngf=8, g_upsample="bilinear"))
    assert [m.mode for m in bilinear.modules() if isinstance(m, torch.nn.Upsample)] == ["bilinear"] * 4
    bilinear.load_state_dict(g.state_dict())  # the same weights: only the doubling differs
    with torch.no_grad():
        smooth = bilinear.eval()(z, e)
    assert smooth.shape == (2, 3, 64, 64) and not torch.allclose(smooth, out, atol=1e-4)


def test_spectral_d_has_no_batchnorm_and_unit_spectral_norms():
    torch.manual_seed(0)
    _, d = build_models(section("model", ngf=8, ndf=8, d_norm="spectral"))
    assert not [m for m in d.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    d.train()
    x, t = torch.randn(4, 3, 64, 64), torch.randn(4, 1024)
    for _ in range(30):  # the power iteration converges over training passes
        d(x, t)
    d.eval()
    sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in layers]
    assert max(sigmas) == pytest.approx(1.0, abs=0.05)
    _, seed_d = build_models(section("model", ngf=8, ndf=8, d_norm="batch"))
    assert any(isinstance(m, nn.BatchNorm2d) for m in seed_d.modules())  # the seed's D keeps BatchNorm


def test_skip_rgb_sums_the_coarse_layers_pictures_into_g_output():
    """``model.g_skip_rgb``: 1x1 convolutions turn G's 16x16 and 32x32 features into RGB, doubled bilinearly
    and added to the last layer's picture before the tanh; off, G is the seed's (the same parameters)."""
    torch.manual_seed(0)
    plain, _ = build_models(section("model", ngf=8, g_upsample="nearest"))
    skip, _ = build_models(section("model", ngf=8, g_upsample="nearest", g_skip_rgb=True))
    assert plain.to_rgb is None and [c.in_channels for c in skip.to_rgb] == [16, 8]
    assert set(skip.state_dict()) - set(plain.state_dict()) == {
        f"to_rgb.{i}.{w}" for i in (0, 1) for w in ("weight", "bias")
    }
    skip.load_state_dict(plain.state_dict(), strict=False)
    z, e = torch.randn(2, 128), torch.randn(2, 1024)
    with torch.no_grad():
        out = skip.eval()(z, e)
        assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1
        assert not torch.allclose(out, plain.eval()(z, e), atol=1e-4)
        for conv in skip.to_rgb:
            conv.weight.zero_(), conv.bias.zero_()
        assert torch.allclose(skip(z, e), plain(z, e), atol=1e-6)  # nothing from the coarse layers: the seed's G


def test_uncond_d_adds_a_realism_logit_that_no_text_enters():
    """``model.d_uncond`` (StackGAN++): a 4x4 convolution on D's image features gives each image a logit
    of its own; the pair logits are unchanged, and off, D is the seed's (no such head)."""
    torch.manual_seed(0)
    _, plain = build_models(section("model", ngf=8, ndf=8, d_norm="spectral", d_uncond=0.0))
    _, joint = build_models(section("model", ngf=8, ndf=8, d_norm="spectral", d_uncond=1.0, d_uncond_features="shared"))
    assert plain.realism is None and isinstance(joint.realism, nn.Conv2d) and joint.realism.in_channels == 64
    assert set(joint.state_dict()) - set(plain.state_dict()) == {
        k for k in joint.state_dict() if k.startswith("realism.")
    }
    joint.eval()
    x, t1, t2 = torch.randn(3, 3, 64, 64), torch.randn(3, 1024), torch.randn(3, 1024)
    with torch.no_grad():
        (s1, r1), (s2, r2) = joint(x, t1, realism=True), joint(x, t2, realism=True)
        assert r1.shape == (3,) and torch.equal(r1, r2)  # the text does not enter
        assert torch.equal(s1, joint(x, t1)) and not torch.allclose(s1, s2)  # the pair logits as before
        assert not torch.allclose(r1, joint(x.flip(3), t1, realism=True)[1])  # the image does


def test_cond_norm_g_scales_and_shifts_its_batchnorms_from_noise_and_text():
    """``model.g_cond_norm``: G's BatchNorms after the projection and each doubling take their scale and
    shift from (z, text code); with those maps zeroed, G is the plain G with unit scale and zero shift."""
    from gancls.models.gan import CondBatchNorm

    torch.manual_seed(0)
    plain, _ = build_models(section("model", ngf=8, g_upsample="nearest", g_cond_norm=False))
    cond, _ = build_models(section("model", ngf=8, g_upsample="nearest", g_cond_norm=True))
    norms = [m for m in cond.modules() if isinstance(m, CondBatchNorm)]
    assert [m.norm.num_features for m in norms] == [64, 32, 16, 8] and norms[0].affine.in_features == 256
    own = cond.state_dict()
    for key, value in plain.state_dict().items():  # convolutions and linear maps shared; BN statistics renamed
        target = (
            key if key in own else key.replace(".running", ".norm.running").replace(".num_batches", ".norm.num_batches")
        )
        if target in own:
            own[target] = value
        elif key.endswith(".weight") or key.endswith(".bias"):  # the plain BN's scale and shift
            value.fill_(1.0 if key.endswith(".weight") else 0.0)
    cond.load_state_dict(own)
    z, e = torch.randn(3, 128), torch.randn(3, 1024)
    with torch.no_grad():
        for m in norms:
            m.affine.weight.zero_(), m.affine.bias.zero_()
        assert torch.allclose(cond.eval()(z, e), plain.eval()(z, e), atol=1e-5)
        norms[-1].affine.bias[:8] = 1.0  # the 32x32 layer's scale doubled: the picture changes
        assert not torch.allclose(cond(z, e), plain(z, e), atol=1e-3)


def test_uncond_d_with_own_features_keeps_the_realism_and_pair_towers_apart():
    """``model.d_uncond_features: own``: the realism logit reads an image tower of its own; the pair
    logits' gradients never reach it, and the realism logit's never reach the pair logits' tower."""
    torch.manual_seed(0)
    _, shared = build_models(
        section("model", ngf=8, ndf=8, d_norm="spectral", d_uncond=1.0, d_uncond_features="shared")
    )
    _, own = build_models(section("model", ngf=8, ndf=8, d_norm="spectral", d_uncond=1.0, d_uncond_features="own"))
    assert shared.realism_image is None and own.realism_image is not None
    assert {k.split(".")[0] for k in set(own.state_dict()) - set(shared.state_dict())} == {"realism_image"}
    x, t = torch.randn(3, 3, 64, 64), torch.randn(3, 1024)
    for d, crossed in ((shared, True), (own, False)):
        scores, r = d(x, t, realism=True)
        image_grad = torch.autograd.grad(r.sum(), list(d.image.parameters()), allow_unused=True)
        assert any(gr is not None and gr.abs().sum() > 0 for gr in image_grad) == crossed
        if d is own:
            own_grad = torch.autograd.grad(scores.sum(), list(d.realism_image.parameters()), allow_unused=True)
            assert all(gr is None for gr in own_grad)
            with torch.no_grad():  # eval: spectral norm's power iteration stands still
                r1, r2 = (d.eval()(x, e, realism=True)[1] for e in (t, torch.randn(3, 1024)))
            assert r1.shape == (3,) and torch.equal(r1, r2)  # no text enters


def test_own_realism_tower_takes_its_own_width():
    """``model.d_uncond_ndf``: the realism tower's width (null: ndf); the pair tower keeps ndf."""
    same = build_models(section("model", ngf=8, ndf=16, d_norm="spectral", d_uncond=1.0, d_uncond_features="own"))[1]
    narrow = build_models(
        section("model", ngf=8, ndf=16, d_norm="spectral", d_uncond=1.0, d_uncond_features="own", d_uncond_ndf=8)
    )[1]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(same.realism_image) == count(same.image)
    assert count(narrow.image) == count(same.image) and count(narrow.realism_image) < count(same.image) / 3
    _, r = narrow(torch.randn(2, 3, 64, 64), torch.randn(2, 1024), realism=True)
    assert r.shape == (2,)
