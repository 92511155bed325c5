import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gancls.training.batches import Batches
from gancls.training.train import STATS, train_step


def fake_data(n=12, classes=3, size=76):
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "embeddings": rng.normal(size=(n, 10, 1024)).astype(np.float32),
        "class_ids": np.arange(n, dtype=np.int32) % classes + 1,
    }


def test_batches_augment_text_and_wrong_pairs():
    data = fake_data()
    b = Batches(data, 64, captions_per_sample=4, flip=True, device="cpu")
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(12)
    imgs = b.augment(idx, gen)
    assert imgs.shape == (12, 3, 64, 64) and imgs.min() >= -1 and imgs.max() <= 1
    wrong = b.wrong(idx, gen)
    assert (b.class_ids[wrong] != b.class_ids[idx]).all()
    text = b.text(idx, gen)
    # each text is the mean of 4 distinct captions of its own image
    emb = torch.from_numpy(data["embeddings"])
    for i in range(12):
        sums = {
            tuple(c)
            for c in torch.combinations(torch.arange(10), 4).tolist()
            if torch.allclose(emb[i, list(c)].mean(0), text[i], atol=1e-5)
        }
        assert len(sums) == 1
    batches = list(b.epoch(5, gen))
    assert len(batches) == 2 and all(x[0].shape[0] == 5 for x in batches)


def _offsets(imgs, data, idx):
    """The (row, col) offset of each crop in its stored image."""
    full = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    found = []
    for k, i in enumerate(idx.tolist()):
        hits = [
            (r, c) for r in range(13) for c in range(13) if torch.equal(full[i, :, r : r + 64, c : c + 64], imgs[k])
        ]
        assert len(hits) == 1
        found.append(hits[0])
    return found


def test_crop_jitter_bounds_the_crop_around_the_centre():
    data, idx = fake_data(), torch.arange(12)
    gen = torch.Generator().manual_seed(0)
    centre = Batches(data, 64, 1, flip=False, device="cpu", crop_jitter=0)
    assert set(_offsets(centre.augment(idx, gen), data, idx)) == {(6, 6)}  # evaluate's centre crop
    near = Batches(data, 64, 1, flip=False, device="cpu", crop_jitter=2)
    seen = [o for _ in range(4) for o in _offsets(near.augment(idx, gen), data, idx)]
    assert all(4 <= r <= 8 and 4 <= c <= 8 for r, c in seen) and len(set(seen)) > 5
    anywhere = Batches(data, 64, 1, flip=False, device="cpu", crop_jitter=None)  # Reed's random crop
    seen = [o for _ in range(4) for o in _offsets(anywhere.augment(idx, gen), data, idx)]
    assert min(min(o) for o in seen) < 4 and max(max(o) for o in seen) > 8


class Recorder(nn.Module):
    """A discriminator that outputs logit 0 and records what it is shown."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, *texts):
        for e in texts:
            self.calls.append((x.detach().clone(), e.detach().clone()))
        out = tuple(self.w + 0.0 * x.mean(dim=(1, 2, 3)) for _ in texts)  # 0, with a path back to the image
        return out[0] if len(out) == 1 else out


class ConstG(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, z, e):
        return torch.zeros(z.shape[0], 3, 64, 64) + self.b + e[:, :1, None, None]


def test_matching_aware_losses_and_pairs():
    g, d = ConstG(), Recorder()
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4)
    real = torch.ones(4, 3, 64, 64)
    text, wrong = torch.randn(4, 1024), torch.randn(4, 1024)
    stats = dict(
        zip(STATS, train_step(g, d, opt_g, opt_d, real, text, wrong, z_dim=8, int_weight=1.0, int_beta=0.5).tolist())
    )
    ln2 = math.log(2)
    # D: BCE(real,right) + 1/2 [BCE(real,wrong) + BCE(fake,right)], all logits 0 -> 2 ln 2
    assert math.isclose(stats["d_loss"], 2 * ln2, rel_tol=1e-6)
    assert math.isclose(stats["g_loss"], ln2, rel_tol=1e-3)
    assert math.isclose(stats["g_int_loss"], ln2, rel_tol=1e-3)
    # D step: real/right, real/wrong, fake/right as separate batches; G step: fake/right, fake/interp
    (x1, e1), (x2, e2), (x3, e3), (x4, e4), (x5, e5) = d.calls
    assert torch.equal(x1, real) and torch.equal(e1, text)
    assert torch.equal(x2, real) and torch.equal(e2, wrong)
    assert not torch.equal(x3, real) and torch.equal(e3, text)
    assert torch.equal(x4, x3) and torch.equal(e4, text)
    assert torch.allclose(e5, 0.5 * text + 0.5 * text.roll(1, 0))  # GAN-INT text, never in D's step


def test_wrong_text_weight_scales_only_the_mismatch_term():
    """train.wrong_weight: D loss = BCE(real,right) + w BCE(real,wrong) + 1/2 BCE(fake,right)."""
    real, text, wrong = torch.ones(4, 3, 64, 64), torch.randn(4, 1024), torch.randn(4, 1024)
    losses = {}
    for w in (0.0, 0.5, 1.0):
        g, d = ConstG(), Recorder()
        opts = [torch.optim.Adam(m.parameters(), lr=1e-4) for m in (g, d)]
        out = train_step(g, d, *opts, real, text, wrong, z_dim=8, int_weight=1.0, int_beta=0.5, wrong_weight=w)
        losses[w] = dict(zip(STATS, out.tolist()))["d_loss"]
    ln2 = math.log(2)  # every logit 0
    assert [round(losses[w] / ln2, 5) for w in (0.0, 0.5, 1.0)] == [1.5, 2.0, 2.5]


class NoiseG(ConstG):
    """Its picture is its first noise coordinate, everywhere."""

    def forward(self, z, e):
        return torch.zeros(z.shape[0], 3, 64, 64) + self.b + z[:, :1, None, None]


def test_mode_seeking_term_is_largest_when_z_is_ignored():
    """MSGAN: lambda / (mean|G(z1,t) - G(z2,t)| / mean|z1 - z2| + 1e-5), and exactly 0 when switched off."""
    real, text, wrong = torch.ones(4, 3, 64, 64), torch.randn(4, 1024), torch.randn(4, 1024)
    ms = {}
    for name, g, weight in (("ignores_z", ConstG(), 1.0), ("uses_z", NoiseG(), 1.0), ("off", NoiseG(), 0.0)):
        d = Recorder()
        opts = [torch.optim.Adam(m.parameters(), lr=1e-4) for m in (g, d)]
        out = train_step(g, d, *opts, real, text, wrong, z_dim=8, int_weight=1.0, int_beta=0.5, mode_seeking=weight)
        ms[name] = dict(zip(STATS, out.tolist()))["g_ms_loss"]
    assert math.isclose(ms["ignores_z"], 1e5, rel_tol=1e-3)  # no spread at all: the term's ceiling
    assert 0.5 < ms["uses_z"] < 100 and ms["off"] == 0.0


def test_gan_int_off():
    g, d = ConstG(), Recorder()
    opts = [torch.optim.Adam(m.parameters(), lr=1e-4) for m in (g, d)]
    stats = dict(
        zip(
            STATS,
            train_step(
                g,
                d,
                opts[0],
                opts[1],
                torch.ones(2, 3, 64, 64),
                torch.randn(2, 1024),
                torch.randn(2, 1024),
                z_dim=8,
                int_weight=0.0,
                int_beta=0.5,
            ).tolist(),
        )
    )
    assert stats["g_int_loss"] == 0.0 and len(d.calls) == 4


class ScaleD(nn.Module):
    """Its logit is w times the image's mean, whatever the text."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, image, *embeddings):
        logits = tuple(self.w * image.mean(dim=(1, 2, 3)) for _ in embeddings)
        return logits[0] if len(logits) == 1 else logits


def test_g_step_gives_g_its_gradient_through_d_and_d_none():
    """D is frozen for G's backward: D keeps the gradient of its own loss only, G gets the full one."""
    g, d = ConstG(), ScaleD()
    opts = [torch.optim.Adam(m.parameters(), lr=0.0) for m in (g, d)]  # lr 0: the weights stay as they are
    real, text, wrong = torch.full((4, 3, 64, 64), 0.5), torch.randn(4, 1024), torch.randn(4, 1024)
    train_step(g, d, *opts, real, text, wrong, z_dim=8, int_weight=1.0, int_beta=0.5)
    bce = F.binary_cross_entropy_with_logits
    w, b = torch.ones((), requires_grad=True), torch.zeros((), requires_grad=True)
    s_real, s_fake = w * 0.5 * torch.ones(4), w * text[:, 0]  # ConstG draws text[:, 0] everywhere
    d_loss = bce(s_real, torch.ones(4)) + 0.5 * bce(s_real, torch.zeros(4)) + 0.5 * bce(s_fake, torch.zeros(4))
    text_int = 0.5 * text + 0.5 * text.roll(1, 0)
    g_loss = bce(b + text[:, 0], torch.ones(4)) + bce(b + text_int[:, 0], torch.ones(4))  # D's w is 1
    assert torch.allclose(d.w.grad, torch.autograd.grad(d_loss, w)[0])
    assert torch.allclose(g.b.grad, torch.autograd.grad(g_loss, b)[0]) and float(g.b.grad) != 0.0
    assert all(p.requires_grad for p in d.parameters())


def test_shared_image_tower_gives_the_same_d_gradients():
    """D's step runs the real images through its image tower once for the right and wrong text;
    the loss and gradients equal those of two separate forward passes."""
    from gancls.models.gan import Discriminator

    torch.manual_seed(0)
    d = Discriminator(ndf=8)
    real, text, wrong = torch.randn(6, 3, 64, 64), torch.randn(6, 1024), torch.randn(6, 1024)

    def grads(shared):
        d.zero_grad()
        if shared:
            s_r, s_w = d(real, text, wrong)
        else:
            s_r, s_w = d(real, text), d(real, wrong)
        loss = F.binary_cross_entropy_with_logits(s_r, torch.ones(6)) + F.binary_cross_entropy_with_logits(
            s_w, torch.zeros(6)
        )
        loss.backward()
        return loss.item(), [p.grad.clone() for p in d.parameters()]

    l1, g1 = grads(True)
    l2, g2 = grads(False)
    assert math.isclose(l1, l2, rel_tol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))


def test_ema_averages_weights_and_reestimates_batchnorm():
    from gancls.models.gan import Generator
    from gancls.training.ema import EMA

    torch.manual_seed(0)
    g = Generator(ngf=4)
    off = EMA(g, 0.0)
    assert off.avg is None and off.shipped(g, None, 128, 2, 4, 0) is g
    ema = EMA(g, 0.5)
    before = [p.clone() for p in g.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    ema.update(g, 1)
    assert all(torch.allclose(a, b + 0.5) for a, b in zip(ema.avg.parameters(), before))
    data = Batches(fake_data(), 64, captions_per_sample=4, flip=False, device="cpu")
    shipped = ema.shipped(g, data, 128, bn_batches=3, batch_size=4, seed=0)
    assert not shipped.training and shipped is not ema.avg
    bn = shipped.project_norm[0]
    assert int(bn.num_batches_tracked) == 3 and not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_ema_copies_g_until_it_starts():
    from gancls.models.gan import Generator
    from gancls.training.ema import EMA

    g = Generator(ngf=4)
    ema = EMA(g, 0.9, start=2)
    for step in (1, 2):
        with torch.no_grad():
            for p in g.parameters():
                p.add_(1.0)
        ema.update(g, step)
        assert all(torch.equal(a, b) for a, b in zip(ema.avg.parameters(), g.parameters()))  # a copy
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    ema.update(g, 3)
    assert all(torch.allclose(a, b - 0.9) for a, b in zip(ema.avg.parameters(), g.parameters()))  # averaging


def _pass_counter(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_one_pass_is_the_same_step_in_fewer_passes():
    """train.one_pass: a D without BatchNorm judges real and fake in one pass of its image tower. Without
    spectral norm's power iteration per pass (and G in eval mode, so that nothing else differs) it computes
    the same losses and the same updates as the separate passes; a D with BatchNorm keeps Reed's separate
    batches, and G's draws stay separate batches either way."""
    from gancls.models.gan import Discriminator, Generator, init_weights

    real, text, wrong = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, 1024), torch.randn(6, 1024)
    runs = {}
    for d_norm, one_pass in (("spectral", False), ("spectral", True), ("batch", True)):
        torch.manual_seed(0)
        g = Generator(z_dim=8, ngf=4, upsample="nearest").eval()
        d = Discriminator(ndf=4, projection=True, norm=d_norm)
        d.apply(init_weights)  # G keeps PyTorch's larger initial weights: its draws differ, MSGAN's term is moderate
        opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (g, d)]  # Adam's first step is sign(grad)
        g_calls, d_calls = _pass_counter(g), _pass_counter(d)
        before = [p.detach().clone() for p in g.parameters()]
        torch.manual_seed(1)
        kw = dict(z_dim=8, int_weight=1.0, int_beta=0.5, mode_seeking=0.25, loss="hinge", one_pass=one_pass)
        stats = train_step(g, d, *opts, real, text, wrong, **kw)
        moves = [p.detach() - b for p, b in zip(g.parameters(), before)]  # G's update
        runs[d_norm, one_pass] = (stats, moves, g_calls[0], d_calls[0])
    (s0, g0, g_n0, d_n0), (s1, g1, g_n1, d_n1) = runs["spectral", False], runs["spectral", True]
    assert torch.allclose(s0, s1, rtol=1e-4, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max())) for a, b in zip(g0, g1))
    assert all(float(a.abs().max()) > 0 for a in g0)
    assert (g_n0, d_n0) == (3, 4)  # right, interpolated, MSGAN's second draw; real, fake, then the two fakes
    assert (g_n1, d_n1) == (3, 3)  # real and fake together
    assert runs["batch", True][2:] == (3, 4)  # with BatchNorm D judges real and fake apart


def test_uncond_d_trains_its_realism_head_in_one_pass_or_separate():
    """model.d_uncond: the step trains D's realism head (untouched without it); one pass and the separate
    passes give the same losses with it, as without it.  train.g_realism: G's own weight on the realism
    logits (None: d_uncond's); D's step does not read it."""
    from gancls.models.gan import Discriminator, Generator, init_weights

    real, text, wrong = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, 1024), torch.randn(6, 1024)
    runs = {}
    for uncond, one_pass, g_realism in ((1.0, False, None), (1.0, True, None), (0.0, True, None), (1.0, True, 0.0)):
        torch.manual_seed(0)
        g = Generator(z_dim=8, ngf=4, upsample="nearest").eval()
        d = Discriminator(ndf=4, projection=True, norm="spectral", uncond=True)
        d.apply(init_weights)
        opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (g, d)]
        head = d.realism.weight.detach().clone()
        torch.manual_seed(1)
        kw = dict(z_dim=8, int_weight=1.0, int_beta=0.5, loss="hinge", one_pass=one_pass, uncond=uncond)
        stats = train_step(g, d, *opts, real, text, wrong, g_realism=g_realism, **kw)
        runs[uncond, one_pass, g_realism] = (stats, float((d.realism.weight.detach() - head).abs().max()))
    assert torch.allclose(runs[1.0, False, None][0], runs[1.0, True, None][0], rtol=1e-4, atol=1e-5)
    assert runs[1.0, True, None][1] > 0 and runs[0.0, True, None][1] == 0
    assert not torch.allclose(runs[1.0, True, None][0][:2], runs[0.0, True, None][0][:2])  # both losses gain terms
    # G's weight 0: D's loss and head step as with weight 1; G's loss is the pair term alone
    assert runs[1.0, True, 0.0][0][0] == runs[1.0, True, None][0][0] and runs[1.0, True, 0.0][1] > 0
    assert not torch.allclose(runs[1.0, True, 0.0][0][1], runs[1.0, True, None][0][1])


def test_uncond_d_with_own_features_leaves_the_pair_tower_to_the_pair_terms():
    """model.d_uncond_features own: D's step trains the realism tower, and D's pair tower takes the same
    step with the realism terms as without them (the realism loss never reaches it); shared, it does not."""
    from gancls.models.gan import Discriminator, Generator, init_weights

    real, text, wrong = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, 1024), torch.randn(6, 1024)
    towers = {}
    for features in ("own", "shared"):
        for uncond in (0.0, 1.0):
            torch.manual_seed(0)
            g = Generator(z_dim=8, ngf=4, upsample="nearest").eval()
            d = Discriminator(ndf=4, projection=True, norm="spectral", uncond=True, uncond_features=features)
            d.apply(init_weights)
            before = [p.detach().clone() for p in (d.realism_image or d.realism).parameters()]
            opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (g, d)]
            torch.manual_seed(1)
            kw = dict(z_dim=8, int_weight=1.0, int_beta=0.5, loss="hinge", one_pass=True, uncond=uncond)
            train_step(g, d, *opts, real, text, wrong, **kw)
            moved = max(
                float((p.detach() - b).abs().max()) for p, b in zip((d.realism_image or d.realism).parameters(), before)
            )
            towers[features, uncond] = ([p.detach().clone() for p in d.image.parameters()], moved)
    assert towers["own", 1.0][1] > 0 and towers["own", 0.0][1] == 0 and towers["shared", 1.0][1] > 0
    assert all(torch.equal(a, b) for a, b in zip(towers["own", 0.0][0], towers["own", 1.0][0]))
    assert not all(torch.equal(a, b) for a, b in zip(towers["shared", 0.0][0], towers["shared", 1.0][0]))


def test_augment_realism_shows_the_realism_tower_alone_an_augmented_view():
    """train.augment_realism: the own realism tower reads real and fake through DiffAugment, the pair tower
    the images as they are, so the pair tower takes the same step with or without it."""
    from gancls.models.gan import Discriminator, Generator, init_weights

    real, text, wrong = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, 1024), torch.randn(6, 1024)
    seen, towers = {}, {}
    for policy in ((), ("cutout",)):
        torch.manual_seed(0)
        g = Generator(z_dim=8, ngf=4, upsample="nearest").eval()
        d = Discriminator(ndf=4, projection=True, norm="spectral", uncond=True, uncond_features="own")
        d.apply(init_weights)
        for name in ("image", "realism_image"):  # what each tower reads in its first pass

            def record(module, args, key=(policy, name)):
                seen.setdefault(key, args[0].detach())

            getattr(d, name).register_forward_pre_hook(record)
        opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (g, d)]
        torch.manual_seed(1)
        kw = dict(z_dim=8, int_weight=1.0, int_beta=0.5, loss="hinge", one_pass=True, uncond=1.0)
        train_step(g, d, *opts, real, text, wrong, augment_realism=policy, **kw)
        towers[policy] = [[p.detach().clone() for p in m.parameters()] for m in (d.image, d.realism_image)]
    # D's first pass: the real images then the fakes; the realism tower sees them with holes cut out
    assert torch.equal(seen[(), "image"][:6], real) and torch.equal(seen[(), "realism_image"], seen[(), "image"])
    assert torch.equal(seen[("cutout",), "image"][:6], real)
    holes = (seen[("cutout",), "realism_image"] == 0).all(dim=1).flatten(1).sum(dim=1)
    assert (holes >= 16 * 16).all() and not torch.equal(seen[("cutout",), "realism_image"], seen[("cutout",), "image"])
    pair, realism = zip(towers[()], towers[("cutout",)])
    assert all(torch.equal(a, b) for a, b in zip(*pair))
    assert not all(torch.equal(a, b) for a, b in zip(*realism))
