"""DiffAugment (training/augment.py): translation and cutout, differentiable, colours untouched."""

import torch

from gancls.training.augment import cutout, diff_augment, translation


def test_translation_shifts_whole_images_and_fills_with_zeros():
    torch.manual_seed(0)
    x = torch.arange(1, 65, dtype=torch.float).view(1, 1, 8, 8).repeat(16, 3, 1, 1)
    y = translation(x)
    for out in y:
        kept = out[0][out[0] != 0]
        assert len(kept) >= 7 * 7  # at most one row and one column (1/8 of 8 px) leave the image
        # what is kept is a shifted window of the original: consecutive rows differ by 8, columns by 1
        rows = (out[0] != 0).any(1).nonzero().flatten()
        cols = (out[0] != 0).any(0).nonzero().flatten()
        window = out[0][rows][:, cols]
        assert (window.diff(dim=0) == 8).all() and (window.diff(dim=1) == 1).all()
    assert not torch.equal(y, x)  # some image moved


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 8, 8)
    y = cutout(x)
    holes = (y[:, 0] == 0).flatten(1).sum(1)
    assert holes.max() == 16 and holes.min() >= 4 and (y[:, 0] == y[:, 2]).all()  # 4x4, the same in every channel


def test_policy_is_differentiable_keeps_colours_and_the_memory_layout():
    torch.manual_seed(0)
    assert diff_augment(x := torch.randn(2, 3, 8, 8), []) is x
    x = torch.rand(8, 3, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = diff_augment(x, ["translation", "cutout"])
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert x.grad is not None and set(x.grad.unique().tolist()) <= {0.0, 1.0}  # pixels moved or dropped, not mixed
    kept = y[y != 0]
    assert set(kept.detach().tolist()) <= set(x.detach().flatten().tolist())  # no colour changed
