"""The ``processors:`` section of a model's ``config.yaml``.

Either the steps themselves::

    processors:
      pre:
        - {kind: image, resize: 256, center_crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
      post:
        - {kind: topk, k: 5, activation: softmax, labels: index_to_name.json}

or a TorchServe built-in handler's equivalent, which expands to its steps::

    processors:
      handler: image_classifier
"""

from __future__ import annotations

from typing import Any

from modelport.errors import ModelportError
from modelport.processing.torchserve import torchserve_equivalent

__all__ = ["expand_handler"]


def expand_handler(value: Any) -> Any:
    """``{handler: NAME}`` -> that handler's ``{pre: [...], post: [...]}``; anything else unchanged.

    Meant as a pydantic ``mode="before"`` validator: errors are ``ValueError``s pydantic reports
    with their location."""
    if not isinstance(value, dict) or "handler" not in value:
        return value
    extra = sorted(set(value) - {"handler"})
    if extra:
        raise ValueError(f"handler: stands alone; remove {', '.join(extra)} or list the steps instead")
    if not isinstance(value["handler"], str):
        raise ValueError("handler: must be the name of a TorchServe built-in handler")
    try:
        return torchserve_equivalent(value["handler"]).model_dump()
    except ModelportError as exc:
        raise ValueError(exc.message) from None
