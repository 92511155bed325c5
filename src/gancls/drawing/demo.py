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
from .draw import SentenceError, check_sentences, draw_texts, load_text_to_image

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
        score = (
            f"text match **{tm['accuracy']:.3f}** (typed text through the encoder {tm.get('encoded_accuracy', float('nan')):.3f}; "
            f"chance {tm['chance']:.3f}, real images {tm['real_ceiling']:.3f}) — `{self.scores_file}`"
            if tm
            else f"no scores: `{self.scores_file}` is missing (`make run` writes it)"
        )
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


def sentence_gallery(shipped: Shipped, text: str, n: int, seed: int) -> tuple[list, list[str]]:
    """``n`` images (uint8 64×64×3) of ``text``, each with the sentence as caption, and the warnings."""
    from .generate import to_uint8

    warnings: list[str] = []
    check_sentences([text], int(n), warnings.append)
    g, mcfg, encoder, _ = shipped.models
    images = to_uint8(draw_texts(g, mcfg, encoder, [text], int(n), int(seed)))
    return [(img, text) for img in images], warnings


@torch.no_grad()
def interpolation_gallery(shipped: Shipped, a: str, b: str, steps: int, seed: int) -> tuple[list, list[str]]:
    """GAN-INT: ``steps`` images at one noise vector, the embedding moving from ``a``'s to ``b``'s."""
    from ..models.text_encoder import encode
    from .generate import to_uint8
    from .grids import lerp

    warnings: list[str] = []
    check_sentences([a, b], int(steps), warnings.append)
    if int(steps) < 2:
        raise SentenceError("steps must be at least 2")
    g, mcfg, encoder, dev = shipped.models
    ea, eb = torch.from_numpy(encode(encoder, [a, b])).to(dev)
    z = torch.randn(1, mcfg.z_dim, generator=torch.Generator().manual_seed(int(seed))).to(dev)
    images = to_uint8(g(z.repeat(int(steps), 1), lerp(ea, eb, int(steps))))
    t = np.linspace(0, 1, int(steps))
    return [
        (img, f"t = {x:.2f}" + (f": {a}" if i == 0 else f": {b}" if i == len(t) - 1 else ""))
        for i, (img, x) in enumerate(zip(images, t))
    ], warnings


def status_html(error: str | None = None, warnings: list[str] | None = None, done: str = "") -> str:
    if error:
        return f'<div class="gancls-status error" id="gancls-error">error: {html.escape(error)}</div>'
    lines = [f"warning: {w}" for w in warnings or []] + ([done] if done else [])
    return f'<div class="gancls-status">{html.escape(chr(10).join(lines))}</div>'


def build_page(shipped: Shipped, cfg: DemoParams):
    import gradio as gr

    def draw(text, n, seed):
        try:
            gallery, warnings = sentence_gallery(shipped, text, n, seed)
        except SentenceError as exc:
            return [], status_html(str(exc))
        return gallery, status_html(warnings=warnings, done=f"{len(gallery)} images of {text!r}, seed {int(seed)}")

    def interpolate(a, b, steps, seed):
        try:
            gallery, warnings = interpolation_gallery(shipped, a, b, steps, seed)
        except SentenceError as exc:
            return [], status_html(str(exc))
        return gallery, status_html(warnings=warnings, done=f"{len(gallery)} steps, seed {int(seed)}")

    with gr.Blocks(title="gancls demo", analytics_enabled=False) as page:
        gr.Markdown("## gancls: type a description, see the birds")
        gr.Markdown(shipped.describe(), elem_id="model-info")
        with gr.Tab("Sentence"):
            text = gr.Textbox(label="Description", value=cfg.examples[0], elem_id="sentence", max_length=1000)
            gr.Examples([[e] for e in cfg.examples], inputs=[text], label="Examples")
            with gr.Row():
                n = gr.Slider(1, 64, value=cfg.n_images, step=1, label="Images", elem_id="n-images")
                seed = gr.Number(cfg.seed, precision=0, minimum=0, label="Seed", elem_id="seed")
            button = gr.Button("Draw", variant="primary", elem_id="draw")
            status = gr.HTML(status_html(), elem_id="status")
            gallery = gr.Gallery(label="Images", elem_id="gallery", columns=8, height="auto", format="png")
            button.click(draw, [text, n, seed], [gallery, status])
            text.submit(draw, [text, n, seed], [gallery, status])
        with gr.Tab("Interpolate (GAN-INT)"):
            a = gr.Textbox(label="From", value=cfg.examples[0], elem_id="from", max_length=1000)
            b = gr.Textbox(label="To", value=cfg.examples[min(1, len(cfg.examples) - 1)], elem_id="to", max_length=1000)
            with gr.Row():
                steps = gr.Slider(2, 32, value=cfg.interp_steps, step=1, label="Steps", elem_id="steps")
                iseed = gr.Number(cfg.seed, precision=0, minimum=0, label="Seed (one noise vector)")
            ibutton = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
            istatus = gr.HTML(status_html(), elem_id="interp-status")
            igallery = gr.Gallery(label="From → to", elem_id="interp-gallery", columns=8, height="auto", format="png")
            ibutton.click(interpolate, [a, b, steps, iseed], [igallery, istatus])
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


def start(shipped: Shipped, cfg: DemoParams, host: str | None = None, port: int | None = None):
    """Start the page in a background thread: (the Gradio app, its address). ``page.close()`` stops it."""
    import gradio as gr

    host = host or cfg.host
    port = cfg.port if port is None else port
    port = port or free_port(host)
    page = build_page(shipped, cfg)
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


def demo(
    params: Params, params_file: str | Path, exp: str | None = None, host: str | None = None, port: int | None = None
) -> None:
    """``gancls demo``: load the model, start the page, print its address, serve until Ctrl-C."""
    cfg = params.demo
    with tempfile.TemporaryDirectory(prefix="gancls-demo-") as tmp:
        shipped = experiment_model(exp, params, tmp) if exp else workspace_model(params, params_file)
        shipped.load(cfg.device)
        page, url = start(shipped, cfg, host, port)
        if not is_loopback(host or cfg.host):
            print(
                f"gancls demo: warning: listening on {host or cfg.host}: other machines can open the page",
                file=sys.stderr,
            )
        print(f"gancls demo: {shipped.source} ({shipped.generator}) on {url}  (Ctrl-C stops it)", flush=True)
        try:
            page.block_thread()
        finally:
            page.close()
