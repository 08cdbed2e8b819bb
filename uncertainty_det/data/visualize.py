"""Drawing ground-truth boxes and sample grids of a manifest (PIL + NumPy)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .images import UNREADABLE_IMAGE_ERRORS, load_rgb
from .manifest import Manifest

# A qualitative palette (RGB) that stays readable on light and dark images.
PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
        [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
    ],
    dtype=np.uint8,
)


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable colour per 1-based class id."""
    return tuple(int(v) for v in PALETTE[(int(class_id) - 1) % len(PALETTE)])


def draw_boxes(
    image: np.ndarray, boxes: np.ndarray, class_ids: Sequence[int], labels: Sequence[str] | None = None, width: int = 2,
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Draw ``[N,4]`` ``[ymin, xmin, ymax, xmax]`` pixel boxes on an ``[H,W,3]`` uint8 image; returns a copy.

    colors: one RGB colour per box (default: the class colour of ``class_ids``).
    """
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    for k, (ymin, xmin, ymax, xmax) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        color = tuple(colors[k]) if colors is not None else class_color(class_ids[k])
        draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=width)
        if labels is not None and str(labels[k]):
            text = str(labels[k])
            tw = 6 * len(text) + 4
            draw.rectangle([xmin, max(ymin - 11, 0), xmin + tw, max(ymin - 11, 0) + 11], fill=color)
            draw.text((xmin + 2, max(ymin - 11, 0)), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def tile_images(images: Sequence[np.ndarray], cell: tuple[int, int] = (192, 192), cols: int = 4) -> np.ndarray:
    """Tile ``[H,W,3]`` uint8 images into a grid of ``cell`` (H, W) sized, aspect-preserving thumbnails."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    grid = np.full((rows * cell[0], cols * cell[1], 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        thumb = Image.fromarray(img)
        thumb.thumbnail((cell[1], cell[0]))
        arr = np.asarray(thumb)
        r, c = divmod(i, cols)
        grid[r * cell[0] : r * cell[0] + arr.shape[0], c * cell[1] : c * cell[1] + arr.shape[1]] = arr
    return grid


def sample_grid(manifest: Manifest, num_images: int = 16, seed: int = 0, cols: int = 4) -> np.ndarray:
    """A grid of up to ``num_images`` randomly chosen images with their labelled boxes (missing files skipped)."""
    rng = np.random.default_rng(seed)
    ids = manifest.image_ids
    chosen = [ids[i] for i in sorted(rng.choice(len(ids), size=min(num_images, len(ids)), replace=False))] if ids else []
    names = manifest.class_names
    cat_index = {cid: i for i, cid in enumerate(manifest.category_ids)}
    drawn = []
    for img_id in chosen:
        try:
            image = load_rgb(manifest.image_path(img_id))
        except OSError:
            continue
        objs = manifest.objects(img_id)
        labels = [names[cat_index[c]] for c in objs.class_ids]
        drawn.append(draw_boxes(image, objs.boxes, objs.class_ids, labels))
    return tile_images(drawn, cols=cols)


def _row_images(manifest: Manifest, rows, prefix: str = ""):
    """Yield ``(position, row, image [H,W,3] uint8, box [4])`` for the rows of a Detections/Matches frame whose
    ``<prefix>ymin..xmax`` box is finite and whose image loads (the others are skipped)."""
    for i, (_, row) in enumerate(rows.iterrows()):
        box = np.array([row[f"{prefix}{c}"] for c in ("ymin", "xmin", "ymax", "xmax")], dtype=np.float64)
        if not np.all(np.isfinite(box)):
            continue
        try:
            image = load_rgb(manifest.image_path(int(row["image_id"])))
        except UNREADABLE_IMAGE_ERRORS:
            continue
        yield i, row, image, box


def crop_mosaic(manifest: Manifest, rows, cell: int = 96, cols: int = 5, pad: float = 0.15,
                gt: bool = False) -> np.ndarray | None:
    """A grid of box crops: one per row of a Detections/Matches frame (``image_id`` and box columns).

    Each crop is the predicted box (``gt=True``: the ``gt_*`` box) enlarged by ``pad`` of its size on every
    side, with the box drawn, resized into a ``cell`` x ``cell`` thumbnail. Unreadable images are skipped.
    Returns ``[H, W, 3]`` uint8, or ``None`` when no crop could be made.
    """
    crops = []
    for _, row, image, box in _row_images(manifest, rows, "gt_" if gt else ""):
        h, w = box[2] - box[0], box[3] - box[1]
        y0, x0 = int(max(box[0] - pad * h, 0)), int(max(box[1] - pad * w, 0))
        y1 = int(min(box[2] + pad * h, image.shape[0])) + 1
        x1 = int(min(box[3] + pad * w, image.shape[1])) + 1
        class_id = int(row["gt_class_id"] if gt else row["class_id"])
        crop = draw_boxes(image, box[None], [class_id])[y0:y1, x0:x1]
        scale = cell / max(crop.shape[:2])  # small objects are enlarged to fill the cell
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crops.append(np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR)))
    if not crops:
        return None
    return tile_images(crops, cell=(cell, cell), cols=min(cols, len(crops)))


def crop_sharpness(manifest: Manifest, rows) -> np.ndarray:
    """No-reference quality of each row's predicted-box crop: variance of the Laplacian of its grey levels.

    ``rows``: a frame with ``image_id`` and the box columns. Low values = blurred or flat crops. Returns
    ``[len(rows)]`` float64 (NaN for unreadable images or empty crops).
    """
    from scipy import ndimage

    out = np.full(len(rows), np.nan)
    for i, _, image, box in _row_images(manifest, rows):
        y0, x0 = max(int(box[0]), 0), max(int(box[1]), 0)
        crop = image[y0:int(np.ceil(box[2])), x0:int(np.ceil(box[3]))].astype(np.float64).mean(axis=-1)
        if crop.shape[0] >= 3 and crop.shape[1] >= 3:
            out[i] = float(ndimage.laplace(crop).var())
    return out
