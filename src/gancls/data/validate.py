"""Great Expectations (1.x) checks of the raw CUB-layout data and of the prepared HDF5 file.

Both checks first reduce the data to small pandas tables, then validate each table as one GX batch:

* ``manifest`` -- one row per image (``build_manifest``): decoding, size, mode, split, class,
  caption count, embedding shape/finiteness/range, bounding box, unique key;
* ``classes``  -- one row per class: the number of splits it appears in (the split is class-disjoint);
* ``splits``   -- one row per split: image counts (CUB's 8,855 / 2,933, or >= 1 for the sample).

GX runs in a throw-away file-mode context; its validation results go to ``<report_dir>/result.json``
(``prepared.json`` for the HDF5 check) with a derived ``success`` flag and ``failures`` list, and its
HTML Data Docs are copied to ``<report_dir>/data_docs/index.html``.  The report is written whether
the data passes or not; on failure ``ValidationFailed`` lists every violated expectation, one a line,
with the offending files -- its first line names a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile

from ..config import ValidateParams
from . import cub
from .expectations import Check, ValidationFailed, between, fail_early, in_set, raise_failures, run_suites
from .raw import open_raw

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

CUB_COUNTS = {"images": 11788, "classes": 200, "train": 8855, "test": 2933}  # REFERENCE.md §2
EMB_SHAPE = "10x1024"
MANIFEST_COLUMNS = [
    "key",
    "path",
    "image_id",
    "class_id",
    "split",
    "bbox_ok",
    "decodes",
    "decode_error",
    "width",
    "height",
    "mode",
    "n_captions",
    "emb_shape",
    "emb_finite",
    "emb_abs_max",
    "emb_norm_min",
    "emb_norm_max",
    "emb_file",
    "caption_file",
]


# --- tables --------------------------------------------------------------------------------------


def _decode(path: Path) -> tuple[bool, str, int | None, int | None, str | None]:
    size = mode = None
    strict, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            im.load()
        return True, "", size[0], size[1], mode
    except FileNotFoundError:
        return False, "file not found", None, None, None
    except Exception as exc:  # noqa: BLE001 - any failure means the file does not decode
        w, h = size if size else (None, None)
        return False, str(exc) or type(exc).__name__, w, h, mode
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = strict


def _embedding_stats(arr, index: int) -> tuple[str, bool | None, float, float, float]:
    """Stats of row ``index`` of an N x captions x dim array (or of a list of per-image arrays)."""
    if isinstance(arr, np.ndarray) and (arr.ndim != 3 or 0 in arr.shape[1:]):
        return "x".join(map(str, arr.shape)), None, np.nan, np.nan, np.nan
    if not 0 <= index < len(arr):
        return f"no row {index} (array has {len(arr)})", None, np.nan, np.nan, np.nan
    row = np.asarray(arr[index])
    if row.ndim != 2 or 0 in row.shape:
        return "x".join(map(str, row.shape)), None, np.nan, np.nan, np.nan
    norms = np.linalg.norm(row, axis=1)
    return (
        "x".join(map(str, row.shape)),
        bool(np.isfinite(row).all()),
        float(np.abs(row).max()),
        float(norms.min()),
        float(norms.max()),
    )


def build_manifest(raw_dir, layout: str = "auto", raw=None) -> pd.DataFrame:
    """One row per image of ``load_index(raw_dir)`` with the facts the expectations check.

    ``raw``: an already open ``open_raw(raw_dir, layout)``, so the layout is read once."""
    root = Path(raw_dir)
    try:
        raw = raw or open_raw(root, layout)
        records = raw.index()
        embeddings = {split: raw.embeddings(split) for split in cub.SPLITS}
    except cub.LayoutError as exc:
        raise ValidationFailed(str(exc)) from exc
    rows = []
    for r in records:
        decodes, error, width, height, mode = _decode(r.path)
        x, y, w, h = r.bbox
        bbox_ok = (
            None
            if width is None
            else bool(x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width + 1 and y + h <= height + 1)
        )
        try:
            n_captions = len(raw.captions(r.key))
        except cub.LayoutError:
            n_captions = 0
        emb = (
            _embedding_stats(embeddings[r.split], r.emb_index) if r.split else (None, None, np.nan, np.nan, np.nan)
        )  # no split: reported by the split check
        rows.append(
            {
                "key": r.key,
                "path": str(r.path),
                "image_id": r.image_id,
                "class_id": r.class_id,
                "split": r.split or "missing",
                "bbox_ok": bbox_ok,
                "decodes": decodes,
                "decode_error": error,
                "width": width,
                "height": height,
                "mode": mode,
                "n_captions": n_captions,
                "emb_shape": emb[0],
                "emb_finite": emb[1],
                "emb_abs_max": emb[2],
                "emb_norm_min": emb[3],
                "emb_norm_max": emb[4],
                "emb_file": raw.image_embeddings_file(r.key, r.split),
                "caption_file": raw.caption_source(r.key),
            }
        )
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype({"width": "Int64", "height": "Int64"})


def _class_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per class: in how many of train/test it appears, and an image from the smaller one."""
    rows = []
    for class_id, g in df[df.split.isin(cub.SPLITS)].groupby("class_id"):
        counts = g.split.value_counts()
        minority = g[g.split == counts.index[-1]]
        rows.append(
            {
                "class_id": int(class_id),
                "n_splits": len(counts),
                "path": minority.path.iloc[0],
                "counts": ", ".join(f"{n} {s}" for s, n in counts.items()),
            }
        )
    return pd.DataFrame(rows, columns=["class_id", "n_splits", "path", "counts"])


def _split_table(df: pd.DataFrame, path_of: Callable[[str], str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "split": s,
                "n_images": int((df.split == s).sum()),
                "n_classes": int(df.class_id[df.split == s].nunique()),
                "path": path_of(s),
            }
            for s in cub.SPLITS
        ]
    )


def _shared_checks() -> tuple[list[Check], list[Check]]:
    """Checks of the class table (class-disjoint split) and the split table (no empty split)."""
    return (
        [between("n_splits", lambda r: f"class {r['class_id']} is in both splits ({r['counts']})", max_value=1)],
        [between("n_images", lambda r: f"the {r['split']} split has no images", min_value=1)],
    )


def validate_raw(raw_dir, cfg: ValidateParams, source: str, report_dir, layout: str = "auto") -> dict:
    """Validate the raw data in ``raw_dir`` (``source`` 'cub' adds CUB's exact counts unless
    ``cfg.cub_counts`` is false: a subset of CUB's classes, e.g. for a run on a few classes).

    ``layout`` (params ``data.layout``) forces an embedding layout; ``auto`` detects it."""
    import great_expectations.expectations as gxe

    if source not in ("cub", "sample"):
        raise ValidationFailed(f"data.source must be 'cub' or 'sample', not {source!r}")
    root, report_dir = Path(raw_dir), Path(report_dir)
    report = report_dir / "result.json"
    try:
        raw = open_raw(root, layout)
        df = build_manifest(root, raw=raw)
        problems = raw.problems()  # layout entries that fit no CUB image or no split
        n_cap = raw.captions_per_image
        class_ids = sorted(cub.read_classes(root))
    except (ValidationFailed, cub.LayoutError) as exc:
        fail_early(report, str(exc), {"source": source, "raw_dir": str(root), "layout": layout}, exc)
    emb_shape = f"{n_cap}x{EMB_SHAPE.split('x')[1]}"

    def show(path: str) -> str:
        return os.path.relpath(path, root) if Path(path).is_relative_to(root) else path

    lo, amax, nmin = cfg.min_side, cfg.max_abs_embedding, cfg.min_embedding_norm
    emb = lambda r: r["emb_file"]  # noqa: E731
    checks = [
        in_set("decodes", [True], lambda r: f"does not decode ({r['decode_error']})"),
        between("width", lambda r: f"width {r['width']} < {lo}", min_value=lo),
        between("height", lambda r: f"height {r['height']} < {lo}", min_value=lo),
        in_set("mode", ["RGB", "L", "CMYK"], lambda r: f"image mode {r['mode']} is not RGB, L or CMYK"),
        in_set(
            "split",
            list(cub.SPLITS),
            lambda r: (
                f"key {r['key']} is in neither split of {raw.layout} "
                f"({raw.split_source('train')}, {raw.split_source('test')})"
            ),
        ),
        in_set("class_id", class_ids, lambda r: f"class id {r['class_id']} is not in {cub.CUB_DIR}/classes.txt"),
        in_set("n_captions", [n_cap], lambda r: f"{r['caption_file']} has {r['n_captions']} captions, not {n_cap}"),
        in_set("emb_shape", [emb_shape], lambda r: f"{emb(r)} gives shape {r['emb_shape']}, not {emb_shape}"),
        in_set("emb_finite", [True], lambda r: f"{emb(r)}: non-finite embedding"),
        between("emb_abs_max", lambda r: f"{emb(r)}: |embedding| {r['emb_abs_max']:.4g} > {amax}", max_value=amax),
        between(
            "emb_norm_min",
            lambda r: f"{emb(r)}: caption embedding norm {r['emb_norm_min']:.4g} < {nmin}",
            min_value=nmin,
        ),
        in_set("bbox_ok", [True], lambda r: "bounding box lies outside the image"),
        Check("key", gxe.ExpectColumnValuesToBeUnique(column="key"), lambda r: f"key {r['key']} is repeated"),
    ]
    classes, splits = _shared_checks()
    if source == "cub" and cfg.cub_counts:
        checks += [
            Check(
                "n_images",
                gxe.ExpectTableRowCountToEqual(value=CUB_COUNTS["images"]),
                f"{cub.CUB_DIR}/images.txt: CUB has {CUB_COUNTS['images']} images",
            ),
            Check(
                "n_classes",
                gxe.ExpectColumnUniqueValueCountToBeBetween(
                    column="class_id", min_value=CUB_COUNTS["classes"], max_value=CUB_COUNTS["classes"]
                ),
                f"{cub.CUB_DIR}/image_class_labels.txt: CUB has {CUB_COUNTS['classes']} classes",
            ),
        ]
        splits.append(
            Check(
                "split_counts",
                gxe.ExpectColumnPairValuesToBeInSet(
                    column_A="split", column_B="n_images", value_pairs_set=[(s, CUB_COUNTS[s]) for s in cub.SPLITS]
                ),
                lambda r: f"the {r['split']} split has {r['n_images']} images, not {CUB_COUNTS[r['split']]}",
            )
        )
    tables = [
        ("manifest", df, checks),
        ("classes", _class_table(df), classes),
        ("splits", _split_table(df, lambda s: str(root / raw.split_source(s))), splits),
    ]
    if problems:  # one row per layout file that fits no CUB image or no split; the path says why
        tables.append(
            (
                "layout",
                pd.DataFrame([{"path": f"{root / f} ({p})", "problem": p, "ok": False} for f, p in problems]),
                [in_set("ok", [True], lambda r: f"{raw.layout} entry does not fit {cub.CUB_DIR} or the split")],
            )
        )
    n = {s: int((df.split == s).sum()) for s in cub.SPLITS}
    summary = {
        "n_images": len(df),
        "n_train": n["train"],
        "n_test": n["test"],
        "n_classes": int(df.class_id.nunique()),
        "layout": raw.layout,
    }
    success, failures = run_suites(
        tables, report_dir, "result.json", show, "", {"source": source, "raw_dir": str(root), **summary}
    )
    if not success:
        raise_failures(failures, report)
    return {
        "success": True,
        **summary,
        "report": str(report),
        "data_docs": str(report_dir / "data_docs" / "index.html"),
    }


def _prepared_table(h5_path: Path) -> tuple[pd.DataFrame, int, int]:
    """One row per image of the prepared file, its load_size and captions per image; structural
    faults raise."""
    import h5py

    names, rows = ("images", "embeddings", "class_ids", "keys", "captions"), []
    try:
        with h5py.File(h5_path, "r") as h5:
            size = h5.attrs.get("load_size")
            if size is None:
                raise ValidationFailed(f"{h5_path}: no load_size attribute")
            n_cap = int(h5.attrs.get("captions_per_image", 10))  # 5 for birds.hdf5, else 10
            for split in cub.SPLITS:
                missing = [n for n in names if f"{split}/{n}" not in h5]
                if missing:
                    raise ValidationFailed(f"{h5_path}: no dataset {split}/{missing[0]}")
                g = {n: h5[split][n] for n in names}
                n_rows = len(g["images"])
                for n, d in g.items():
                    if len(d) != n_rows:
                        raise ValidationFailed(f"{h5_path}: {split}/{n} has {len(d)} rows, {split}/images has {n_rows}")
                keys, class_ids = g["keys"].asstr()[()], g["class_ids"][()]
                image_shape = "x".join(map(str, g["images"].shape[1:]))
                emb_shape = "x".join(map(str, g["embeddings"].shape[1:]))
                for lo in range(0, n_rows, 256):  # in chunks: CUB's train images are ~0.15-2 GB
                    hi = min(lo + 256, n_rows)
                    images = g["images"][lo:hi].reshape(hi - lo, -1).astype(np.float32)
                    finite = np.isfinite(g["embeddings"][lo:hi].reshape(hi - lo, -1)).all(axis=1)
                    captions = g["captions"].asstr()[lo:hi].reshape(hi - lo, -1)
                    for j, i in enumerate(range(lo, hi)):
                        rows.append(
                            {
                                "split": split,
                                "key": keys[i],
                                "path": f"{split}[{i}] {keys[i]}",
                                "class_id": int(class_ids[i]),
                                "image_shape": image_shape,
                                "emb_shape": emb_shape,
                                "emb_finite": bool(finite[j]),
                                "n_captions": sum(bool(c.strip()) for c in captions[j]),
                                "pixel_std": float(images[j].std()),
                            }
                        )
    except OSError as exc:
        raise ValidationFailed(f"{h5_path}: cannot be read as HDF5 ({exc})") from exc
    columns = ["split", "key", "path", "class_id", "image_shape", "emb_shape", "emb_finite", "n_captions", "pixel_std"]
    return pd.DataFrame(rows, columns=columns), int(size), n_cap


def validate_prepared(h5_path, cfg: ValidateParams, report_dir) -> dict:
    """Validate the prepared HDF5 (groups train/test; see prepare.py) against its ``load_size``."""
    import great_expectations.expectations as gxe

    h5_path, report_dir = Path(h5_path), Path(report_dir)
    report = report_dir / "prepared.json"
    try:
        df, size, n_cap = _prepared_table(h5_path)
    except ValidationFailed as exc:
        fail_early(report, str(exc), {"h5": str(h5_path)}, exc)
    want, emb_shape = f"{size}x{size}x3", f"{n_cap}x{EMB_SHAPE.split('x')[1]}"
    checks = [
        in_set("image_shape", [want], lambda r: f"image shape {r['image_shape']}, not {want} (load_size {size})"),
        in_set("emb_shape", [emb_shape], lambda r: f"embedding shape {r['emb_shape']}, not {emb_shape}"),
        in_set("emb_finite", [True], lambda r: "non-finite embedding"),
        in_set("n_captions", [n_cap], lambda r: f"{r['n_captions']} non-empty captions, not {n_cap}"),
        between("pixel_std", lambda r: "image is constant", min_value=0, strict_min=True),
        Check("key", gxe.ExpectColumnValuesToBeUnique(column="key"), lambda r: "key is repeated"),
    ]
    classes, splits = _shared_checks()
    tables = [
        ("prepared", df, checks),
        ("prepared_classes", _class_table(df), classes),
        ("prepared_splits", _split_table(df, lambda s: f"{s} group"), splits),
    ]
    n = {s: int((df.split == s).sum()) for s in cub.SPLITS}
    success, failures = run_suites(
        tables,
        report_dir,
        report.name,
        str,
        f"{h5_path}: ",
        {"h5": str(h5_path), "n_train": n["train"], "n_test": n["test"]},
    )
    if not success:
        raise_failures(failures, report)
    return {
        "success": True,
        "n_train": n["train"],
        "n_test": n["test"],
        "report": str(report),
        "data_docs": str(report_dir / "data_docs" / "index.html"),
    }
