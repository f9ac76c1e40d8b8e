"""Reference implementations transcribed from torchvision's and TorchServe's sources.

torchvision (``transforms/functional.py`` and ``_functional_pil.py``, PIL code paths):
``resize`` with ``_compute_resized_output_size``, ``center_crop`` with its zero padding,
``to_tensor`` and ``normalize``. TorchServe 0.12: ``ImageClassifier.postprocess`` with
``map_class_to_label``, ``ImageSegmenter.postprocess``, ``ObjectDetector.postprocess``. The torch
parts run only where torch is installed (tests marked ``torch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageOps

PIL_FILTERS = {
    "nearest": 0,
    "lanczos": 1,
    "bilinear": 2,
    "bicubic": 3,
    "box": 4,
    "hamming": 5,
}  # torchvision's pil_modes_mapping


def _compute_resized_output_size(image_size: tuple[int, int], size: list[int]) -> list[int]:
    h, w = image_size
    short, long = (w, h) if w <= h else (h, w)
    if len(size) == 1:  # specified size only for the smallest edge
        requested_new_short = size[0]
        new_short, new_long = requested_new_short, int(requested_new_short * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    else:  # specified both h and w
        new_w, new_h = size[1], size[0]
    return [new_h, new_w]


def tv_resize(img: Image.Image, size: int | list[int], interpolation: str = "bilinear") -> Image.Image:
    image_width, image_height = img.size
    if isinstance(size, int):
        size = [size]
    output_size = _compute_resized_output_size((image_height, image_width), size)
    if [image_height, image_width] == output_size:
        return img
    return img.resize(tuple(output_size[::-1]), PIL_FILTERS[interpolation])  # F_pil.resize


def _parse_fill(img: Image.Image) -> dict[str, Any]:
    fill: Any = 0
    num_bands = len(img.getbands())
    if num_bands > 1:
        fill = tuple([fill] * num_bands)
    return {"fill": fill}


def tv_center_crop(img: Image.Image, output_size: int | tuple[int, int]) -> Image.Image:
    if isinstance(output_size, int):
        output_size = (int(output_size), int(output_size))
    image_width, image_height = img.size
    crop_height, crop_width = output_size
    if crop_width > image_width or crop_height > image_height:
        padding_ltrb = [
            (crop_width - image_width) // 2 if crop_width > image_width else 0,
            (crop_height - image_height) // 2 if crop_height > image_height else 0,
            (crop_width - image_width + 1) // 2 if crop_width > image_width else 0,
            (crop_height - image_height + 1) // 2 if crop_height > image_height else 0,
        ]
        img = ImageOps.expand(img, border=tuple(padding_ltrb), **_parse_fill(img))  # F_pil.pad, constant
        image_width, image_height = img.size
        if crop_width == image_width and crop_height == image_height:
            return img
    crop_top = int(round((image_height - crop_height) / 2.0))  # noqa: RUF046 (transcribed as written)
    crop_left = int(round((image_width - crop_width) / 2.0))  # noqa: RUF046
    return img.crop((crop_left, crop_top, crop_left + crop_width, crop_top + crop_height))  # F_pil.crop


def tv_to_tensor(pic: Image.Image) -> Any:
    import torch

    mode_to_nptype = {"I": np.int32, "I;16": np.int16, "F": np.float32}
    img = torch.from_numpy(np.array(pic, mode_to_nptype.get(pic.mode, np.uint8), copy=True))
    if pic.mode == "1":
        img = 255 * img
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def tv_normalize(tensor: Any, mean: list[float], std: list[float]) -> Any:
    import torch

    tensor = tensor.clone()
    dtype = tensor.dtype
    mean_t = torch.as_tensor(mean, dtype=dtype, device=tensor.device)
    std_t = torch.as_tensor(std, dtype=dtype, device=tensor.device)
    if mean_t.ndim == 1:
        mean_t = mean_t.view(-1, 1, 1)
    if std_t.ndim == 1:
        std_t = std_t.view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


def ts_image_classifier_postprocess(data: Any, mapping: dict[str, str] | None, topk: int = 5) -> list[Any]:
    """``ImageClassifier.postprocess`` of TorchServe 0.12."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from ts.utils.util import map_class_to_label

    ps = F.softmax(data, dim=1)
    probs, classes = torch.topk(ps, topk, dim=1)
    return map_class_to_label(probs.tolist(), mapping, classes.tolist())  # type: ignore[no-any-return]


def ts_image_segmenter_postprocess(data: Any) -> Any:
    """``ImageSegmenter.postprocess`` of TorchServe 0.12."""
    import torch

    data = data["out"]
    data = torch.nn.functional.softmax(data, dim=1)
    data = torch.max(data, dim=1)
    data = torch.stack([data.indices.type(data.values.dtype), data.values], dim=3)
    return data.tolist()


def ts_object_detector_postprocess(data: list[dict[str, Any]], mapping: dict[str, str] | None) -> list[Any]:
    """``ObjectDetector.postprocess`` of TorchServe 0.12 (threshold 0.5)."""
    from ts.utils.util import map_class_to_label

    threshold = 0.5
    result = []
    box_filters = [row["scores"] >= threshold for row in data]
    filtered_boxes, filtered_classes, filtered_scores = [
        [row[key][box_filter].tolist() for row, box_filter in zip(data, box_filters, strict=True)]
        for key in ["boxes", "labels", "scores"]
    ]
    for classes, boxes, scores in zip(filtered_classes, filtered_boxes, filtered_scores, strict=True):
        retval = []
        for _class, _box, _score in zip(classes, boxes, scores, strict=True):
            _retval = map_class_to_label([[_box]], mapping, [[_class]])[0]
            _retval["score"] = _score
            retval.append(_retval)
        result.append(retval)
    return result
