"""GAN-CLS learns on the sample: pictures generated from unseen test captions show what the
captions state, clearly more often than chance and than the captions of other classes.

This is the test that fails when the conditioning breaks (text ignored by G or D, wrong pairs,
wrong labels).  It shares one briefly trained model per session (the ``learned`` fixture).
"""
import json

from gancls.generate import generate
from gancls.scorer import score_generated


def test_generated_images_follow_their_captions(learned):
    params = learned["params"]
    generate(learned["model"] / "generator.pt", learned["prepared"], params)
    match = score_generated(learned["root"] / "generated/images.h5", learned["prepared"], learned["scorer"],
                            params.seed)
    print("learning test:", json.dumps(match))
    assert match["n_pairs"] == params.generate.num_samples
    assert match["real_ceiling"] > 0.6
    # the conditioning works: well above chance and above the mismatched control
    assert match["accuracy"] > match["chance"] + 0.08, match
    assert match["accuracy"] > 1.5 * match["mismatched_accuracy"], match
    for name in ("generated.png", "interp_text.png", "interp_noise.png", "train.gif"):
        assert (learned["reports"] / name).stat().st_size > 1000
