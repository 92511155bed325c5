"""GAN-CLS learns on the sample: pictures generated from unseen test captions show what the
captions state, clearly more often than chance and than the captions of other classes.

This is the test that fails when the conditioning breaks (text ignored by G or D, wrong pairs,
wrong labels, a text encoder that does not land in the embedding space G was trained on).  It shares one briefly trained model per session (the ``learned`` fixture).
"""

import json

from gancls.data.prepared import read_prepared
from gancls.drawing.generate import generate
from gancls.evaluation.scorer import load_scorer, score_generated


def test_generated_images_follow_their_captions(learned):
    params = learned["params"]
    generate(learned["model"] / "generator.pt", learned["prepared"], params)
    test, scorer = read_prepared(learned["prepared"], "test"), load_scorer(learned["scorer"])
    match = score_generated(learned["root"] / "generated/images.h5", test, scorer, params.seed)
    print("learning test:", json.dumps(match))
    assert match["n_pairs"] == params.generate.num_samples
    assert match["real_ceiling"] > 0.6
    # the conditioning works: well above chance and above the mismatched control
    assert match["accuracy"] > match["chance"] + 0.08, match
    assert match["accuracy"] > 1.5 * match["mismatched_accuracy"], match
    # the same captions typed instead of looked up: their text, encoded by the fitted text encoder,
    # still decides what is drawn
    encoded = score_generated(
        learned["root"] / "generated/images.h5", test, scorer, params.seed, dataset="encoded_images"
    )
    print("encoded captions:", json.dumps(encoded), "encoder:", json.dumps(learned["encoder_metrics"]))
    assert encoded["accuracy"] > encoded["chance"] + 0.05, encoded
    assert encoded["accuracy"] > 1.5 * encoded["mismatched_accuracy"], encoded
    for name in ("generated.png", "interp_text.png", "interp_noise.png", "train.gif", "typed_sentences.png"):
        assert (learned["reports"] / name).stat().st_size > 1000
