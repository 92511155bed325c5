"""Issue 31 diagnostic: FID of the averaged G against G as trained, from a run's checkpoint.pt (500 test captions).

.venv/bin/python benchmarks/ema_vs_raw.py [build/model/checkpoint.pt]
"""

if __name__ == "__main__":
    import sys

    import torch

    from gancls.config import load_params
    from gancls.data.prepared import read_prepared
    from gancls.models.gan import build_generator
    from gancls.training.batches import Batches
    from gancls.training.ema import EMA
    from gancls.training.quality import QualityProbe

    torch.set_num_threads(2)
    p = load_params("params.yaml")
    p = p.model_copy(update={"train": p.train.model_copy(update={"eval_images": 500})})
    path = sys.argv[1] if len(sys.argv) > 1 else "build/model/checkpoint.pt"
    ck = torch.load(path, map_location="cpu", weights_only=True)
    probe = QualityProbe(p, p.prepare.out, torch.device("cpu"))
    g = build_generator(p.model)
    g.load_state_dict(ck["generator"])
    g.eval()
    print("raw eval-BN", probe(g), flush=True)
    split = read_prepared(p.prepare.out, "train")
    data = Batches(split, 64, 1, False, torch.device("cpu"), False, 0, 1)
    e = EMA(g, 0.998)
    e.avg.load_state_dict(ck["ema_generator"])
    print("ema standing", probe(e.shipped(g, data, 128, 20, 32, 7)), flush=True)
    # raw with standing stats
    e2 = EMA(g, 0.998)
    e2.avg.load_state_dict(ck["generator"])
    print("raw standing", probe(e2.shipped(g, data, 128, 20, 32, 7)), flush=True)
