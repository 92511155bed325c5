"""train stage: GAN-CLS with the matching-aware discriminator and the GAN-INT generator term.

Per step (Reed et al. 2016, Algorithm 1, plus GAN-INT):
    t       = mean of ``captions_per_sample`` of the image's 10 caption embeddings (right text)
    t_wrong = the text of an image of a different class
    t_int   = beta * t + (1 - beta) * t of another image in the batch
    D loss  = BCE(D(x, t), 1) + 1/2 [BCE(D(x, t_wrong), 0) + BCE(D(G(z, t), t), 0)]
              (``wrong_weight``: the 1/2 of the wrong-text term; Reed's 1/2 is the default)
    G loss  = BCE(D(G(z, t), t), 1) + int_weight * BCE(D(G(z', t_int), t_int), 1)
One D step then one G step; Adam, lr halved every ``lr_decay_every`` epochs.
Three departures from the paper, each off at 0 / false (on in the sample's default, off in
``configs/reed_cub.yaml``): MSGAN's mode-seeking term (``mode_seeking``:
+ lambda / (mean|G(z, t) - G(z2, t)| / mean|z - z2| + 1e-5), a second draw of the same text for half
the batch), StackGAN's conditioning augmentation (``model.cond_aug``: + ``kl_weight`` * KL of G's text
code) and, in D itself, Miyato & Koyama's projection term (``model.d_projection``, ``model.py``).

Read ``_train`` first: set-up, then for each epoch the update, the lr schedule, the record and the
checkpoint; then the shipped model.  Behind names: the batches (``batches.py``), the training state
(``state.TrainingState``: one ``state_dict`` for resume checkpoints, ``checkpoint.py``, and the final
``checkpoint.pt``), the step as run (``make_step``: compiled or a CUDA graph), statistics read once
per ``log_every`` steps with a guard that stops at the first non-finite loss (``stats.EpochStats``), the
averaged G (``ema.py``), the record (``run_record.py``: console, DVCLive, grids; rank 0 only), DDP
under torchrun (``distributed.py``) and where each epoch's time goes (``loop_times.py``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, Params, seed_everything
from ..data.prepared import read_prepared
from ..files import atomic_path, file_digest, save_torch
from ..models.generator_file import save_generator
from .augment import diff_augment
from .batches import Batches
from .checkpoint import (
    check_resumable,
    clear_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trained_with,
)
from .cuda_graph import GraphedStep
from .distributed import Dist, no_sync
from .loop_times import LoopTimes
from .losses import d_loss, fooled, penalty, realism
from .precision import resolve_precision
from .quality import quality_probe
from .run_record import RunRecord, sample_frame
from .state import TrainingState
from .stats import STATS, EpochStats

SHIPPED_LAST = "last epoch: G's weights after the final step"
SHIPPED_EMA = (
    "last epoch: exponential moving average of G's weights (decay {decay}) with re-estimated BatchNorm statistics"
)


@contextmanager
def frozen(module: torch.nn.Module):
    """``module``'s parameters need no gradient inside (gradients still flow through it to its inputs)."""
    module.requires_grad_(False)
    try:
        yield module
    finally:
        module.requires_grad_(True)


def train_step(
    g,
    d,
    opt_g,
    opt_d,
    real,
    text,
    wrong_text,
    z_dim: int,
    int_weight: float,
    int_beta: float,
    precision: str = "fp32",
    cast_cache: bool = True,
    mode_seeking: float = 0.0,
    kl_weight: float = 0.0,
    wrong_weight: float = 0.5,
    loss: str = "bce",
    augment: tuple[str, ...] = (),
    augment_realism: tuple[str, ...] = (),
    penalty_kind: str = "none",
    penalty_weight: float = 0.0,
    penalty_power: float = 6.0,
    one_pass: bool = False,
    uncond: float = 0.0,
    g_realism: float | None = None,
) -> torch.Tensor:
    """One D step then one G step; the STATS as one tensor on the device (no host sync).

    D sees real/right, real/wrong and fake/right as separate batches (as in Reed's code): BatchNorm
    over a mixed batch would let D tell fakes by batch statistics that a batch of only fakes in the
    G step does not have, and G would get no gradient.  The real images go through D's image tower
    once for the right and the wrong text.  ``precision="bf16"`` runs the passes under bfloat16
    autocast (the losses in fp32).  ``loss``: ``bce`` or ``hinge`` (``losses.py``); ``augment``: the
    DiffAugment policy applied to every image D sees (``augment.py``; ``augment_realism``: to what the
    realism tower alone sees, ``model.d_uncond_features: own``); ``penalty_kind`` with
    ``penalty_weight`` > 0: D's gradient penalty this step (the caller makes it lazy).

    ``one_pass`` (``train.one_pass``): a D without BatchNorm judges the real and the fake images in one
    pass of its image tower, the same losses in one larger pass (with BatchNorm, D keeps Reed's
    separate batches).  G's draws stay separate batches: its BatchNorm normalises each on its own
    (drawn in one batch, seed 0 lost 0.14 of text match and no time; docs/SCORES.md).  ``uncond``
    (``model.d_uncond``) > 0: D's image-only realism logits add StackGAN++'s unconditional terms, so weighted,
    to both losses (to G's with ``g_realism``, ``train.g_realism``, where that is not None).
    """
    b = real.shape[0]
    dev = real.device
    amp = (
        torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=cast_cache)
        if precision == "bf16"
        else nullcontext()
    )
    z = torch.randn(b, z_dim, device=dev)
    with amp:
        fake, kl = g(z, text, with_kl=True) if kl_weight > 0 else (g(z, text), torch.zeros((), device=dev))

    # Discriminator: real/right -> 1, real/wrong -> 0, fake/right -> 0.
    def judge(x, *texts, **rows):  # model.d_uncond: also realism logits, of x through augment_realism
        view = {"realism": True, "realism_view": diff_augment(x, augment_realism)} if uncond else {}
        return d(x, *texts, **rows, **view)

    opt_d.zero_grad(set_to_none=True)
    with amp:
        real_in, fake_in = diff_augment(real, augment), diff_augment(fake.detach(), augment)
        if one_pass and not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules()):
            rows, pairs = torch.arange(b, device=dev), torch.cat([text, wrong_text, text])
            both = judge(torch.cat([real_in, fake_in]), pairs, rows=torch.cat([rows, rows, rows + b]))
            scores, r = both if uncond else (both, None)
            s_real, s_wrong, s_fake = scores.split(b)
        else:  # Reed's separate batches
            real_out, fake_out = judge(real_in, text, wrong_text), judge(fake_in, text)
            if uncond:
                (real_out, r_real), (fake_out, r_fake) = real_out, fake_out
                r = torch.cat([r_real, r_fake])
            (s_real, s_wrong), s_fake = real_out, fake_out
    loss_d = d_loss(loss, s_real, s_wrong, s_fake, wrong_weight)
    loss_d = loss_d + uncond * realism(loss, *r.split(b)) if uncond else loss_d
    if penalty_kind != "none" and penalty_weight > 0:
        loss_d = loss_d + penalty(penalty_kind, d, real, text, penalty_weight, penalty_power)
    loss_d.backward()
    opt_d.step()

    # Generator: fool D with right text, and with interpolated text (GAN-INT; D never trains on it).
    # D is frozen for this backward (its weight gradients would be thrown away: the same G gradients,
    # about an eighth less work on the CPU) and under DDP nothing of D is all-reduced.
    opt_g.zero_grad(set_to_none=True)
    g_uncond = uncond if g_realism is None else g_realism
    with frozen(d), no_sync(d):
        with amp:
            loss_g = fooled(loss, judge(diff_augment(fake, augment), text), g_uncond)
            if int_weight > 0:
                text_int = int_beta * text + (1 - int_beta) * text.roll(1, dims=0)
                fake_int = g(torch.randn(b, z_dim, device=dev), text_int)
                g_int = fooled(loss, judge(diff_augment(fake_int, augment), text_int), g_uncond)
            else:
                g_int = torch.zeros((), device=dev)
            if mode_seeking > 0:  # MSGAN: the same text with other noise must give another image
                h = max(b // 2, 1)  # on half the batch: half the cost of the second draw
                z2 = torch.randn(h, z_dim, device=dev)
                spread = (fake[:h] - g(z2, text[:h])).abs().mean() / (z[:h] - z2).abs().mean()
                g_ms = 1.0 / (spread.float() + 1e-5)
            else:
                g_ms = torch.zeros((), device=dev)
        (loss_g + int_weight * g_int + mode_seeking * g_ms + kl_weight * kl.float()).backward()
    opt_g.step()
    with torch.no_grad():
        judged = [torch.sigmoid(s.float()).mean() for s in (s_real, s_wrong, s_fake)]
        return torch.stack([loss_d, loss_g, g_int, g_ms, kl.float(), *judged])


def make_step(g, d, opt_g, opt_d, mcfg, tcfg, graphed: bool):
    """The step the loop (and ``benchmarks/train_speed.py``) runs: ``train_step`` with the run's settings,
    compiled (``train.compile``) or recorded as a CUDA graph (``graphed``); (real, text, wrong) -> STATS."""
    if tcfg.compile:
        g, d = torch.compile(g), torch.compile(d)

    precision = resolve_precision(tcfg.precision, next(g.parameters()).device)
    calls = [0]

    def step(real, text, wrong):
        calls[0] += 1  # the lazy penalty: every penalty_every-th D step, penalty_every times as strong
        lazy = graphed or calls[0] % tcfg.penalty_every == 0
        return train_step(
            g,
            d,
            opt_g,
            opt_d,
            real,
            text,
            wrong,
            mcfg.z_dim,
            tcfg.int_weight,
            tcfg.int_beta,
            precision,
            cast_cache=not graphed,
            mode_seeking=tcfg.mode_seeking,
            kl_weight=tcfg.kl_weight if mcfg.cond_aug else 0.0,
            wrong_weight=tcfg.wrong_weight,
            loss=tcfg.loss,
            augment=tuple(tcfg.augment),
            augment_realism=tuple(tcfg.augment_realism),
            penalty_kind=tcfg.penalty,
            penalty_weight=tcfg.penalty_weight * (1 if graphed else tcfg.penalty_every) if lazy else 0.0,
            penalty_power=tcfg.penalty_power,
            one_pass=tcfg.one_pass,
            uncond=mcfg.d_uncond,
            g_realism=tcfg.g_realism,
        )

    return GraphedStep(step) if graphed else step


def train(prepared: str | Path, params: Params, times: LoopTimes | None = None) -> dict:
    """Train GAN-CLS on the prepared file's train split; every output path comes from ``params.train``.

    Resumes from the newest checkpoint in ``train.checkpoint_dir`` unless ``train.resume`` is false;
    returns the summary that DVCLive writes to ``<train.live_dir>/metrics.json``.  ``times``, if given,
    gets where the loop's time went, per part and per epoch (``loop_times.LoopTimes``).
    """
    times = times if times is not None else LoopTimes()
    dist = Dist.setup(params.train.device)
    try:
        return _train(prepared, params, dist, times)
    finally:
        dist.close()


def _train(prepared: str | Path, params: Params, dist: Dist, times: LoopTimes) -> dict:
    tcfg, mcfg, seed = params.train, params.model, int(params.seed)
    with times.part("setup"):  # the models, the data on the device, the resume, DVCLive
        seed_everything(seed + dist.rank)
        gen = torch.Generator(device=dist.device).manual_seed(seed + 1000 * dist.rank)  # this rank's draws
        order_gen = torch.Generator(device=dist.device).manual_seed(seed + 1)  # the same on every rank
        split = read_prepared(prepared, "train")
        data = _batches(split, prepared, params, dist)
        graphed = _graphed(tcfg, dist)
        state = TrainingState(mcfg, tcfg, dist.device, graphed, gen)
        # The fixed grid: first captions of images spread over the training split, with the fixed noise.
        grid_idx = np.linspace(0, data.n - 1, min(tcfg.grid_size, data.n)).astype(int)
        grid_text = data.embeddings[torch.from_numpy(grid_idx).to(dist.device), 0]
        grid_captions = [str(split["captions"][i, 0]) for i in grid_idx]
        ckpt_dir, data_sha1, generators = (
            Path(tcfg.checkpoint_dir),
            file_digest(prepared),
            {"gen": gen, "order_gen": order_gen},
        )
        resumed = _resume(state, ckpt_dir, params, data_sha1, dist, generators)
        start, per_epoch = state.epoch, data.steps_per_epoch(tcfg.batch_size)
        run_step = make_step(dist.wrap(state.g), dist.wrap(state.d), state.opt_g, state.opt_d, mcfg, tcfg, graphed)
        record = RunRecord(tcfg, dist.main, start if resumed else None, times)
        probe = quality_probe(params, prepared, dist.device, record.say) if dist.main else None

    def shipped():  # the G to look at and to ship: averaged, with re-estimated BatchNorm statistics
        return state.ema.shipped(
            state.g, data, mcfg.z_dim, tcfg.bn_stat_batches, max(tcfg.batch_size // dist.world, 2), seed + 7
        )

    for epoch in range(start + 1, tcfg.epochs + 1):
        times.start_epoch()
        t0, stats = time.perf_counter(), EpochStats(dist, epoch, state.step)
        bar = record.bar(epoch, per_epoch)
        for i, (real, text, wrong) in enumerate(data.epoch(tcfg.batch_size, gen, order_gen), 1):
            stats.add(run_step(real, text, wrong))  # the update: one D step, then one G step
            state.ema.update(state.g, state.step + i)
            bar.update(1)
            if i % tcfg.log_every == 0 or i == per_epoch:
                with times.part("reads"):
                    stats.read()  # to the host, and the non-finite guard
                    record.show(bar, stats.latest, i * tcfg.batch_size, t0)
        bar.close()
        row = state.end_epoch(epoch, per_epoch, stats.means(), t0, tcfg.batch_size)
        if probe is not None and (epoch % tcfg.eval_every == 0 or epoch == tcfg.epochs):
            with times.part("quality"):  # KID and FID of the averaged G's images, into DVCLive with the row
                row.update(probe(shipped()))
        record.epoch(  # DVCLive and the grid: "live" and "grids" in the loop's times
            row, state.step, lambda title: sample_frame(shipped(), state.fixed_z, grid_text, grid_captions, title)
        )
        if epoch % tcfg.checkpoint_every == 0 or epoch == tcfg.epochs:
            with times.part("checkpoint"):
                rngs = dist.gather(rng_state(generators))
                if dist.main:
                    save_checkpoint(
                        ckpt_dir,
                        epoch,
                        {**state.state_dict(), "rng": rngs, "trained_with": trained_with(params, data_sha1)},
                    )
        record.next_step()
        times.end_epoch(epoch)

    with times.part("final"):
        if not dist.main:
            dist.barrier()
            return {}
        final = shipped()
        with atomic_path(tcfg.out_dir) as tmp:
            tmp.mkdir()
            save_torch({**state.state_dict(), "model": mcfg.model_dump()}, tmp / "checkpoint.pt")
            save_generator(final, mcfg, tmp / "generator.pt")
        summary = _summary(state, tcfg, dist, data.n, start)
        record.finish(summary)
        clear_checkpoints(ckpt_dir)  # the run is complete: its whole state is in out_dir/checkpoint.pt
        dist.barrier()
    return summary


def _batches(split: dict, prepared, params: Params, dist: Dist) -> Batches:
    """The split on the device as this rank's batches; bad settings or data as one ConfigError line."""
    tcfg, mcfg = params.train, params.model
    if tcfg.batch_size % dist.world:  # the schema checks train.processes; this, a torchrun started by hand
        raise ConfigError(f"train.batch_size {tcfg.batch_size} is not divisible by the {dist.world} processes")
    try:
        data = Batches(
            split,
            mcfg.image_size,
            tcfg.captions_per_sample,
            tcfg.flip,
            dist.device,
            tcfg.channels_last,
            dist.rank,
            dist.world,
            tcfg.crop_jitter,
        )
    except ValueError as exc:
        raise ConfigError(f"{prepared}: {exc}") from None
    if dist.active and data.n < tcfg.batch_size:
        raise ConfigError(
            f"{prepared}: {data.n} training images, fewer than one batch of {tcfg.batch_size} "
            f"(train.batch_size) over {dist.world} processes"
        )
    return data


def _graphed(tcfg, dist: Dist) -> bool:
    """Whether the step runs as a CUDA graph (train.cuda_graph, one process on a CUDA device)."""
    graphed = tcfg.cuda_graph and dist.device.type == "cuda" and not dist.active
    if tcfg.cuda_graph and not graphed and dist.main:
        print("train.cuda_graph needs one process on a CUDA device: running the steps eagerly", flush=True)
    return graphed


def _resume(
    state: TrainingState, ckpt_dir: Path, params: Params, data_sha1: str, dist: Dist, generators: dict
) -> Path | None:
    """Load the newest checkpoint of the same configuration (and the random states) into ``state``;
    without one (or with train.resume false) clear the folder.  Returns the checkpoint loaded."""
    latest = latest_checkpoint(ckpt_dir) if params.train.resume else None
    if latest is None:
        if dist.main:
            clear_checkpoints(ckpt_dir)
        return None
    saved = load_checkpoint(latest)
    check_resumable(latest, saved, params, data_sha1, dist.world)
    state.load_state_dict(saved)
    set_rng_state(saved["rng"][dist.rank], generators)
    if dist.main:
        print(
            f"resuming from {latest}: epoch {state.epoch} of {params.train.epochs} done ({state.step} steps)",
            flush=True,
        )
    return latest


def _summary(state: TrainingState, tcfg, dist: Dist, n_images: int, start: int) -> dict:
    """The run's summary (DVCLive's metrics.json): settings, speed, what was shipped, the last epoch's STATS."""
    history, last = state.history, state.history[-1]
    return {
        "epochs": tcfg.epochs,
        "device": str(dist.device),
        "processes": dist.world,
        "precision": resolve_precision(tcfg.precision, dist.device),
        "train_images": n_images,
        "steps": state.step,
        "seconds": round(sum(r["seconds"] for r in history), 2),
        "images_per_s": round(float(np.mean([r["images_per_s"] for r in history])), 2),
        "resumed_from_epoch": start,
        "shipped": SHIPPED_EMA.format(decay=tcfg.ema_decay) if state.ema.avg is not None else SHIPPED_LAST,
        **{k: round(float(last[k]), 4) for k in STATS},
    }
