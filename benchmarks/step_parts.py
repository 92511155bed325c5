"""Issue 31 diagnostic: milliseconds per train step of params.yaml's settings with GAN-INT and MSGAN switched off.

.venv/bin/python benchmarks/step_parts.py [default no_int no_ms no_int_no_ms]   # quiet cores
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
    variants = {
        "default": {},
        "no_int": {"int_weight": 0.0},
        "no_ms": {"mode_seeking": 0.0},
        "no_int_no_ms": {"int_weight": 0.0, "mode_seeking": 0.0},
    }
    for name in sys.argv[1:] or variants:
        t = p.train.model_copy(update=variants[name])
        g, d, og, od = build_training(p.model, t, torch.device("cpu"), False)
        step = make_step(g, d, og, od, p.model, t, False)
        for b in batches[:4]:
            step(*b)
        n, t0 = 0, time.perf_counter()
        for _rep in range(3):
            for b in batches:
                step(*b)
                n += 1
        dt = (time.perf_counter() - t0) / n
        print(f"{name}: {dt * 1000:.1f} ms/step, {32 / dt:.0f} images/s", flush=True)
