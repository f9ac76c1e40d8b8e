"""Processing definitions equivalent to TorchServe 0.12's built-in handlers.

``torchserve_equivalent(name)`` returns the :class:`ProcessingSpec` that reproduces a handler's
transforms and response shape (read from ``ts/torch_handler/*.py``). What differs, and why:

- Every vision handler opens the image with ``Image.open`` and transforms it as decoded: an RGBA,
  palette or greyscale image then fails ``Normalize`` with a 500. Here images are converted to RGB
  first, which gives identical tensors for RGB images and a working answer for the others. EXIF
  orientation is ignored, as TorchServe ignores it. TorchServe lifts Pillow's pixel limit
  (``Image.MAX_IMAGE_PIXELS = None``); here ``max_pixels`` stays in force.
- Labels: TorchServe reads ``index_to_name.json`` when present; here that file is preferred too,
  but a ``labels.txt`` (or the manifest's labels file) is also used when it is the only one. A class
  missing from the mapping is named by its index instead of failing with a KeyError, and ``topk``
  larger than the number of classes returns every class instead of failing.
- object_detector: the response (``[{label: [x1, y1, x2, y2], "score": s}]`` above 0.5) is exact,
  but it needs a model whose outputs are one image's ``boxes``, ``labels`` and ``scores`` tensors; a
  torchvision detection model returns a list of dicts and needs torchvision (not installable beside
  modelport's torch) to be exported that way.
- text_classifier: TorchServe cleans the text (HTML, contractions, accents, punctuation),
  tokenizes with torchtext's ``basic_english``, adds bigrams and looks tokens up in a pickled
  torchtext vocabulary (``source_vocab.pt``); none of that is readable without torchtext. Here the
  text is tokenized with a ``tokenizer.json`` (padded to the longest in the batch; TorchServe does
  not batch at all), and the response is exact: softmax over every class, ``{label: probability}``
  in class order.
"""

from __future__ import annotations

from modelport.errors import InvalidArgumentError
from modelport.processing.spec import (
    DetectionStep,
    ImageStep,
    ProcessingSpec,
    SegmentationStep,
    TextStep,
    TopKStep,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TORCHSERVE_HANDLERS", "torchserve_equivalent"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Resize(256), CenterCrop(224), ToTensor(), Normalize(ImageNet): image_classifier and image_segmenter
_IMAGENET_224 = ImageStep(
    exif_transpose=False, resize=256, center_crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="NCHW"
)

TORCHSERVE_HANDLERS: dict[str, ProcessingSpec] = {
    "image_classifier": ProcessingSpec(pre=(_IMAGENET_224,), post=(TopKStep(k=5, activation="softmax"),)),
    "image_segmenter": ProcessingSpec(pre=(_IMAGENET_224,), post=(SegmentationStep(),)),
    "object_detector": ProcessingSpec(
        pre=(ImageStep(exif_transpose=False, normalize=False, layout="NCHW"),),  # ToTensor() only
        post=(DetectionStep(threshold=0.5),),
    ),
    "text_classifier": ProcessingSpec(
        pre=(TextStep(padding="longest"),),
        post=(TopKStep(k=None, activation="softmax"),),
    ),
}


def torchserve_equivalent(handler: str) -> ProcessingSpec:
    """The definition reproducing TorchServe's built-in ``handler`` (see the module docstring)."""
    try:
        return TORCHSERVE_HANDLERS[handler]
    except KeyError:
        known = ", ".join(TORCHSERVE_HANDLERS)
        raise InvalidArgumentError(f"unknown TorchServe handler {handler!r}; built-in handlers: {known}") from None
