"""Issue 31 diagnostic: milliseconds per train step of params.yaml's settings, and of variants of them:
GAN-INT or MSGAN switched off, D's separate passes for real and fake (train.one_pass false), the skip G
(model.g_skip_rgb), D's unconditional realism logit (model.d_uncond), each precision. The variants take turns, three rounds of 12 steps each; the best round is printed,
so that a slow moment of the machine hits every variant alike.

.venv/bin/python benchmarks/step_parts.py [default separate skip_rgb uncond fp32 bf16 no_int no_ms no_int_no_ms]   # quiet cores
"""

if __name__ == "__main__":
    import sys
    import time

    import torch

    from gancls.config import load_params
    from gancls.data.prepared import read_prepared
    from gancls.training.batches import Batches
    from gancls.training.state import build_training
    from gancls.training.train import make_step

    torch.set_num_threads(2)
    p = load_params("params.yaml")
    split = read_prepared(p.prepare.out, "train")
    data = Batches(split, 64, 1, False, torch.device("cpu"), True, 0, 1)
    gen = torch.Generator().manual_seed(0)
    batches = [b for _, b in zip(range(12), data.epoch(32, gen, torch.Generator().manual_seed(1)))]
    variants = {  # name: (model keys, train keys)
        "default": ({}, {}),
        "separate": ({}, {"one_pass": False}),
        "skip_rgb": ({"g_skip_rgb": True}, {}),
        "uncond": ({"d_uncond": 1.0}, {}),
        "fp32": ({}, {"precision": "fp32"}),
        "bf16": ({}, {"precision": "bf16"}),
        "no_int": ({}, {"int_weight": 0.0}),
        "no_ms": ({}, {"mode_seeking": 0.0}),
        "no_int_no_ms": ({}, {"int_weight": 0.0, "mode_seeking": 0.0}),
    }
    steps = {}
    for name in sys.argv[1:] or variants:
        m, t = (section.model_copy(update=u) for section, u in zip((p.model, p.train), variants[name]))
        g, d, og, od = build_training(m, t, torch.device("cpu"), False)
        steps[name] = make_step(g, d, og, od, m, t, False)
        for b in batches[:4]:
            steps[name](*b)
    best = dict.fromkeys(steps, float("inf"))
    for _round in range(3):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for b in batches:
                step(*b)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(batches))
    for name, dt in best.items():
        print(f"{name}: {dt * 1000:.1f} ms/step, {32 / dt:.0f} images/s", flush=True)
