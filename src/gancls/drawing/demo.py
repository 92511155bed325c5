"""``gancls demo``: a local page to type a description and see the birds (Gradio).

The page draws with the generator and text encoder a run shipped — the workspace's by default, or a
DVC experiment's (``--exp NAME``, read with ``dvc.api`` into a temporary folder; the workspace is not
touched). A sentence goes through the same checks as ``gancls sample --text``
(``draw.check_sentences``) and the same drawing (``draw.draw_texts``); the second tab is
GAN-INT, the text embedding moved along a straight line between two sentences at fixed noise
(``grids.lerp``, as ``reports/interp_text.png``).

The page listens on ``demo.host`` (loopback by default), makes no share link and sends no analytics.
"""

from __future__ import annotations

import faulthandler
import hashlib
import html
import ipaddress
import json
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import DemoParams, Params
from ..models.text_encoder import MAX_LEN
from .draw import MAX_IMAGES, MAX_SEED, SentenceError, check_sentences, draw_texts, load_text_to_image, whole_number

MAX_STEPS = 32  # the interpolation tab's steps

# The 64×64 images are shown enlarged without smoothing, so what G drew is what one sees.
CSS = (
    ".gancls-status.error {color: #b00020; font-weight: bold} .gancls-status {white-space: pre-wrap} "
    "#gallery img, #interp-gallery img {image-rendering: pixelated}"
)


class DemoError(ValueError):
    """The page cannot start (a missing model, an unknown experiment, a busy port); one line."""


@dataclass
class Shipped:
    """What a run shipped, and where it was read from."""

    source: str  # "workspace" or "experiment NAME"
    generator: Path
    encoder: Path
    params_file: Path
    scores_file: Path
    scores: dict | None = None
    models: tuple = field(default=(), repr=False)  # (G, model params, encoder, device) once loaded

    def digest(self, path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

    def load(self, device: str) -> Shipped:
        if not self.generator.is_file():
            raise DemoError(f"{self.generator}: no generator there (train.out_dir/generator.pt): `make run` makes it")
        self.models = load_text_to_image(self.generator, self.encoder, device)
        if self.scores_file.is_file():
            self.scores = json.loads(self.scores_file.read_text(encoding="utf-8"))
        return self

    def model_line(self) -> str:
        """The ``model:`` params stored in the generator file, and their digest (SHA-256 of their JSON)."""
        if not self.models:
            return "(not loaded)"
        text = json.dumps(self.models[1].model_dump(), sort_keys=True)
        pairs = ", ".join(f"{k} {v}" for k, v in self.models[1].model_dump().items())
        return f"{pairs} (sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})"

    def describe(self) -> str:
        """Markdown: which model and encoder, their digests, and the run's text-conditioning score."""
        tm = (self.scores or {}).get("text_match")
        if tm and isinstance(tm.get("accuracy"), (int, float)):
            names = {
                "encoded_accuracy": "typed text through the encoder",
                "chance": "chance",
                "real_ceiling": "real images",
            }
            known = [f"{what} {tm[k]:.3f}" for k, what in names.items() if isinstance(tm.get(k), (int, float))]
            score = f"text match **{tm['accuracy']:.3f}**" + (f" ({'; '.join(known)})" if known else "")
            score += f" — `{self.scores_file}`"
        else:
            score = f"no scores: `{self.scores_file}` is missing or has no text match (`make run` writes it)"
        return "\n".join(
            [
                f"**Model of the {self.source}.**",
                f"- generator `{self.generator}` (sha256 {self.digest(self.generator)})",
                f"- text encoder `{self.encoder}` (sha256 {self.digest(self.encoder)})",
                f"- params `{self.params_file}` (sha256 {self.digest(self.params_file)})"
                if self.params_file.is_file()
                else f"- params `{self.params_file}`: missing",
                f"- trained with `model:` {self.model_line()}",
                f"- {score}",
            ]
        )


def workspace_model(params: Params, params_file: str | Path) -> Shipped:
    return Shipped(
        "workspace",
        Path(params.train.out_dir) / "generator.pt",
        Path(params.text_encoder.weights),
        Path(params_file),
        Path(params.evaluate.out),
    )


def experiment_model(name: str, params: Params, into: str | Path, repo: str | Path = ".") -> Shipped:
    """The generator, encoder, scores and params.yaml of DVC experiment (or git revision) ``name``,
    copied with ``dvc.api.open`` into ``into``; the workspace is not changed."""
    import dvc.api
    import yaml
    from dvc.exceptions import DvcException
    from dvc.scm import RevError

    into = Path(into)

    def fetch(path: str, required: bool = True) -> Path:
        out = into / path
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with dvc.api.open(path, repo=str(repo), rev=name, mode="rb") as src:
                out.write_bytes(src.read())
        except RevError:
            raise DemoError(f"--exp {name}: no such experiment or git revision (`dvc exp list` lists them)") from None
        except (DvcException, FileNotFoundError) as exc:
            if required:
                raise DemoError(f"--exp {name}: cannot read {path} ({type(exc).__name__}: {exc})") from None
        return out

    params_file = fetch("params.yaml")
    raw = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    # Only the three paths are read, with the workspace's as fallback: an older experiment's params.yaml
    # may lack sections added since.
    out_dir = raw.get("train", {}).get("out_dir", params.train.out_dir)
    weights = raw.get("text_encoder", {}).get("weights", params.text_encoder.weights)
    scores = raw.get("evaluate", {}).get("out", params.evaluate.out)
    return Shipped(
        f"experiment {name}",
        fetch(f"{out_dir}/generator.pt"),
        fetch(weights),
        params_file,
        fetch(scores, required=False),
    )


def check_request(text, n, seed, warn) -> tuple[int, int]:
    """The page's sentence request, checked as ``gancls sample --text`` checks its arguments (the same
    one-line SentenceError, in the same order: --n, --seed, the sentence): (n, seed) as ints."""
    n = whole_number(n, "--n", 1, MAX_IMAGES)
    seed = whole_number(seed, "--seed", 0, MAX_SEED)
    check_sentences([text], n, warn)
    return n, seed


def sentence_gallery(shipped: Shipped, text: str, n, seed) -> tuple[list, list[str]]:
    """``n`` images (uint8 64×64×3) of ``text``, each with the sentence as caption, and the warnings."""
    from .generate import to_uint8

    warnings: list[str] = []
    n, seed = check_request(text, n, seed, warnings.append)
    g, mcfg, encoder, _ = shipped.models
    images = to_uint8(draw_texts(g, mcfg, encoder, [text], n, seed))
    caption = text if len(text) <= MAX_LEN else text[:MAX_LEN] + "…"  # what the encoder read
    return [(img, caption) for img in images], warnings


@torch.no_grad()
def interpolation_gallery(shipped: Shipped, a: str, b: str, steps, seed) -> tuple[list, list[str]]:
    """GAN-INT: ``steps`` images at one noise vector, the embedding moving from ``a``'s to ``b``'s."""
    from ..models.text_encoder import encode
    from .generate import to_uint8
    from .grids import lerp

    warnings: list[str] = []
    steps = whole_number(steps, "steps", 2, MAX_STEPS)
    seed = whole_number(seed, "--seed", 0, MAX_SEED)
    check_sentences([a, b], 1, warnings.append)
    g, mcfg, encoder, dev = shipped.models
    ea, eb = torch.from_numpy(encode(encoder, [a, b])).to(dev)
    z = torch.randn(1, mcfg.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    images = to_uint8(g(z.repeat(steps, 1), lerp(ea, eb, steps)))
    t = np.linspace(0, 1, steps)
    return [
        (img, f"t = {x:.2f}" + (f": {a}" if i == 0 else f": {b}" if i == len(t) - 1 else ""))
        for i, (img, x) in enumerate(zip(images, t))
    ], warnings


def status_html(error: str | None = None, warnings: list[str] | None = None, done: str = "") -> str:
    if error:
        return f'<div class="gancls-status error" id="gancls-error">error: {html.escape(error)}</div>'
    lines = [f"warning: {w}" for w in warnings or []] + ([done] if done else [])
    return f'<div class="gancls-status">{html.escape(chr(10).join(lines))}</div>'


def element_id(base: str, i: int) -> str:
    """The first model's elements keep their one-model ids (#gallery, #model-info); the others' get -1, -2..."""
    return base if i == 0 else f"{base}-{i}"


def build_page(models: list[Shipped], cfg: DemoParams):
    """One page for one model, or several side by side (``gancls demo --exp A --exp B``): each draws the
    same sentence, number and seed, under its own scores and params digest.

    The events take the raw request (``preprocess=False``): Gradio's own checks would answer a count out
    of range or a seed that is not a whole number with a message of its own, or a bare "Error"; here
    every bad request gets the CLI's one line (``check_request``), whichever client sent it."""
    import gradio as gr

    def each(gallery_of, *args) -> list:
        galleries, warnings = [], []
        for shipped in models:
            gallery, warnings = gallery_of(shipped, *args)
            galleries.append(gallery)
        return galleries, warnings

    def draw(text, n, seed):
        try:
            galleries, warnings = each(sentence_gallery, text, n, seed)
        except SentenceError as exc:
            return [[] for _ in models] + [status_html(str(exc))]
        shown = text if len(text) <= 80 else text[:80] + "…"
        done = f"{len(galleries[0])} images of {shown!r}, seed {int(seed)}" + (
            f", by each of {len(models)} models" if len(models) > 1 else ""
        )
        return galleries + [status_html(warnings=warnings, done=done)]

    def interpolate(a, b, steps, seed):
        try:
            galleries, warnings = each(interpolation_gallery, a, b, steps, seed)
        except SentenceError as exc:
            return [[] for _ in models] + [status_html(str(exc))]
        return galleries + [status_html(warnings=warnings, done=f"{len(galleries[0])} steps, seed {int(seed)}")]

    def columns(base: str, label: str) -> list:
        out = []
        with gr.Row():
            for i, shipped in enumerate(models):
                with gr.Column():
                    if len(models) > 1:
                        gr.Markdown(f"### {shipped.source}")
                    out.append(
                        gr.Gallery(
                            label=label,
                            elem_id=element_id(base, i),
                            columns=8 // len(models) or 1,
                            height="auto",
                            format="png",
                        )
                    )
        return out

    with gr.Blocks(title="gancls demo", analytics_enabled=False) as page:
        gr.Markdown("## gancls: type a description, see the birds")
        with gr.Row():
            for i, shipped in enumerate(models):
                gr.Markdown(shipped.describe(), elem_id=element_id("model-info", i))
        with gr.Tab("Sentence"):
            text = gr.Textbox(label="Description", value=cfg.examples[0], elem_id="sentence", max_length=1000)
            gr.Examples([[e] for e in cfg.examples], inputs=[text], label="Examples")
            with gr.Row():
                n = gr.Slider(1, MAX_IMAGES, value=cfg.n_images, step=1, label="Images", elem_id="n-images")
                seed = gr.Number(cfg.seed, precision=0, minimum=0, label="Seed", elem_id="seed")
            button = gr.Button("Draw", variant="primary", elem_id="draw")
            status = gr.HTML(status_html(), elem_id="status")
            galleries = columns("gallery", "Images")
            button.click(draw, [text, n, seed], [*galleries, status], api_name="draw", preprocess=False)
            text.submit(draw, [text, n, seed], [*galleries, status], api_name=False, preprocess=False)
        with gr.Tab("Interpolate (GAN-INT)"):
            a = gr.Textbox(label="From", value=cfg.examples[0], elem_id="from", max_length=1000)
            b = gr.Textbox(label="To", value=cfg.examples[min(1, len(cfg.examples) - 1)], elem_id="to", max_length=1000)
            with gr.Row():
                steps = gr.Slider(2, MAX_STEPS, value=cfg.interp_steps, step=1, label="Steps", elem_id="steps")
                iseed = gr.Number(cfg.seed, precision=0, minimum=0, label="Seed (one noise vector)")
            ibutton = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
            istatus = gr.HTML(status_html(), elem_id="interp-status")
            igalleries = columns("interp-gallery", "From → to")
            ibutton.click(
                interpolate, [a, b, steps, iseed], [*igalleries, istatus], api_name="interpolate", preprocess=False
            )
    page.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency)
    return page


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def start(models: Shipped | list[Shipped], cfg: DemoParams, host: str | None = None, port: int | None = None):
    """Start the page (one model, or several side by side) in a background thread: (the Gradio app, its
    address). ``page.close()`` stops it."""
    import gradio as gr

    host = host or cfg.host
    port = cfg.port if port is None else port
    port = port or free_port(host)
    page = build_page(models if isinstance(models, list) else [models], cfg)
    # Local fonts only: Gradio's default theme would make the browser fetch Google Fonts.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    try:
        page.launch(
            server_name=host,
            server_port=port,
            share=False,
            prevent_thread_lock=True,
            quiet=True,
            ssr_mode=False,
            mcp_server=False,
            theme=theme,
            css=CSS,
        )
    except OSError as exc:
        raise DemoError(
            f"cannot listen on {host}:{port} ({exc}); demo.port 0 (or --port 0) takes a free port"
        ) from None
    return page, f"http://{host if ':' not in host else f'[{host}]'}:{port}/"


STOP_SECONDS = 30  # the most a stopping page may take (Gradio's close, the temporary folder)


def demo(
    params: Params,
    params_file: str | Path,
    exps: list[str] | None = None,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """``gancls demo``: load the model (the workspace's, or each ``--exp``'s, side by side), start the
    page, print its address, serve until Ctrl-C."""
    cfg = params.demo
    exps = list(exps or [])
    if len(set(exps)) != len(exps):
        raise DemoError(f"--exp: each experiment once ({', '.join(exps)})")
    with tempfile.TemporaryDirectory(prefix="gancls-demo-") as tmp:
        if exps:
            models = [experiment_model(exp, params, Path(tmp) / str(i)) for i, exp in enumerate(exps)]
        else:
            models = [workspace_model(params, params_file)]
        for shipped in models:
            shipped.load(cfg.device)
        page, url = start(models, cfg, host, port)
        if not is_loopback(host or cfg.host):
            print(
                f"gancls demo: warning: listening on {host or cfg.host}: other machines can open the page",
                file=sys.stderr,
            )
        shown = "; ".join(f"{m.source} ({m.generator})" for m in models)
        print(f"gancls demo: {shown} on {url}  (Ctrl-C stops it)", flush=True)
        try:
            page.block_thread()
        finally:
            # Ctrl-C must stop it: a close that hangs prints every thread's stack and exits (status 1)
            faulthandler.dump_traceback_later(STOP_SECONDS, exit=True)
            page.close()
    faulthandler.cancel_dump_traceback_later()
