"""The text-conditioning score: labels, chance, the mismatched control, and that it can fail."""

import numpy as np
import pytest
import torch

from gancls.data import synthetic
from gancls.evaluation import scorer
from gancls.evaluation.scorer import (
    Scorer,
    caption_labels,
    chance_level,
    heldout_mask,
    image_targets,
    mismatched_partners,
    text_match,
    vocabulary,
)

KINDS = ["body", "wing", "head", "beak"]
FREE = ["pose", "background", "size"]


def test_caption_labels_are_what_the_caption_states():
    cap = "this small bird has a red body, blue wings and a yellow beak, flying."
    assert caption_labels(cap, 3, KINDS, "sample") == {"body": "red", "wing": "blue", "beak": "yellow"}
    assert caption_labels(cap, 3, ["body"], "sample") == {"body": "red"}
    assert caption_labels(cap, 3, KINDS, "cub") == {"class": "3"}


def test_image_targets_merge_the_captions_of_an_image():
    vocab = vocabulary(KINDS, "sample", [1])
    split = {
        "keys": np.array(["a", "b"]),
        "class_ids": np.array([1, 2]),
        "captions": np.array(
            [
                ["a bird with a red body.", "this bird has a green head."],
                ["a bird with blue wings.", "this bird is flying."],
            ],
            dtype=object,
        ),
    }
    t = image_targets(split, vocab, "sample")
    red, green, blue = (synthetic.VOCAB["body"].index(c) for c in ("red", "green", "blue"))
    assert t.tolist() == [[red, -1, green, -1], [-1, blue, -1, -1]]
    with pytest.raises(ValueError, match="not attributes"):
        vocabulary(["tail"], "sample", [1])


def test_chance_is_sum_of_squared_label_frequencies():
    stated = [{"body": "red"}] * 3 + [{"body": "blue"}] + [{"body": "red", "head": "grey"}]
    # body: 5 statements, p(red) = 4/5, p(blue) = 1/5; head: 1 statement, p(grey) = 1
    expected = 5 / 6 * (0.8**2 + 0.2**2) + 1 / 6 * 1.0
    assert chance_level(stated, ["body", "head"]) == pytest.approx(expected)
    # unbalanced frequencies: not 1 / number of labels
    assert chance_level(stated, ["body", "head"]) != pytest.approx(0.5)


def test_mismatched_partners_are_of_another_class():
    cls = np.array([1, 1, 1, 2, 2, 3])
    p = mismatched_partners(cls, 0)
    assert (cls[p] != cls).all()
    with pytest.raises(ValueError, match="two classes"):
        mismatched_partners(np.array([4, 4, 4]), 0)


def test_heldout_mask_takes_part_of_every_class():
    cls = np.repeat([1, 2, 3], 10)
    m = heldout_mask(cls, 0.3, 0)
    assert [int(m[cls == c].sum()) for c in (1, 2, 3)] == [3, 3, 3]


class Oracle(Scorer):
    """Reads the body colour from the centre pixel (images painted in PALETTE colours)."""

    def __init__(self, vocab):
        super().__init__(vocab, width=4)
        self.palette = torch.tensor([synthetic.PALETTE[c] for c in vocab["body"]], dtype=torch.float32)

    def forward(self, images):
        px = images[:, 32, 32].float()
        logits = -((px[:, None, :] - self.palette[None]) ** 2).sum(-1)
        return [logits]


def painted(colours):
    return np.stack([np.full((64, 64, 3), synthetic.PALETTE[c], np.uint8) for c in colours])


def test_text_match_follows_the_pictures_and_cannot_be_fooled():
    vocab = vocabulary(["body"], "sample", [1])
    colours = ["red", "blue", "green", "yellow"] * 5
    classes = np.repeat(np.arange(4), 1)[np.arange(20) % 4]  # class follows colour
    captions = [f"a bird with a {c} body." for c in colours]
    state = {"vocab": vocab, "source": "sample", "heldout_keys": [f"k{i}" for i in range(20)]}
    real = painted(colours)
    keys = np.array([f"k{i}" for i in range(20)])
    index = np.arange(20)
    model = Oracle(vocab)

    good = text_match(model, state, real, real, captions, classes, index, keys, 0)
    assert good["accuracy"] == 1.0 and good["real_ceiling"] == 1.0
    assert good["mismatched_accuracy"] == 0.0  # another class's caption names another colour here
    assert good["chance"] == pytest.approx(0.25)

    # a generator that ignores the text (always red) scores at its share of red captions
    ignoring = text_match(model, state, painted(["red"] * 20), real, captions, classes, index, keys, 0)
    assert ignoring["accuracy"] == pytest.approx(0.25)
    # and one whose pictures follow the wrong caption scores 0
    wrong = text_match(model, state, painted(colours[1:] + colours[:1]), real, captions, classes, index, keys, 0)
    assert wrong["accuracy"] == 0.0
    # the ceiling only uses held-out real images
    partial = {**state, "heldout_keys": ["k0", "k1"]}
    assert text_match(model, partial, real, real, captions, classes, index, keys, 0)["n_ceiling_pairs"] == 2


def test_trained_scorer_reads_colours_of_unseen_classes(tiny_scorer):
    """The classifier trained on the tiny sample's training split beats chance on its test split."""
    summary = tiny_scorer["summary"]
    assert summary["labels"] == KINDS and summary["trained_on"] == "training split"
    assert summary["heldout_accuracy_per_kind"]["body"] > 0.6
    # the free kinds too (read by the diversity score, not by text_match): background fills the picture
    assert summary["free_kinds"] == FREE and summary["heldout_accuracy_per_kind"]["background"] > 0.5
    loaded, state = scorer.load_scorer(tiny_scorer["path"])
    assert list(state["vocab"]) == KINDS + FREE and state["text_kinds"] == KINDS and state["heldout_keys"]
