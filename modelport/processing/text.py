"""Text preprocessing with a Hugging Face ``tokenizers`` ``tokenizer.json``.

Each request is one text (``str`` or UTF-8 bytes). The batch is tokenized together, truncated to
``max_length`` (or refused, per item, when truncation is off) and padded to ``max_length`` or to
the longest item, then split back into per-request tensors with a batch dimension of 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from modelport.errors import InvalidArgumentError, ModelportError, NotFoundError, summarize
from modelport.processing.base import ProcessingContext, map_items
from modelport.processing.spec import TextStep
from modelport.tensors import Arrays

__all__ = ["TextProcessor", "load_tokenizer"]


def load_tokenizer(step: TextStep, context: ProcessingContext) -> Tokenizer:
    """The step's ``tokenizer.json``, with the step's truncation and without padding of its own."""
    path = context.directory / step.tokenizer
    if not path.is_file():
        raise NotFoundError(f"text step: no tokenizer file {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for malformed files
        raise InvalidArgumentError(f"{path}: not a tokenizers tokenizer.json ({summarize(exc)})") from None
    return tokenizer


def _pad_id(step: TextStep, tokenizer: Tokenizer) -> int:
    if step.pad_id is not None:
        return step.pad_id
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    pad = tokenizer.token_to_id("[PAD]")
    return pad if pad is not None else 0


class TextProcessor:
    """The ``text`` step: one text per item in, ``{input_ids, attention_mask, ...}`` out."""

    def __init__(self, step: TextStep, context: ProcessingContext) -> None:
        tokenizer = load_tokenizer(step, context)
        self.pad_id = _pad_id(step, tokenizer)
        tokenizer.no_padding()
        if step.truncation:
            tokenizer.enable_truncation(step.max_length)
        else:
            tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.step = step
        self.label = context.describe(step.input_ids)
        self.names = {
            "ids": step.input_ids,
            "attention_mask": step.attention_mask,
            "type_ids": step.token_type_ids,
        }
        self.dtypes = {field: _dtype(step, context, name) for field, name in self.names.items() if name}

    def __call__(self, items: Sequence[object], /) -> list[object]:
        """Each item's tensors, or its error; the padding width is shared by the batch."""
        texts = map_items(self._text, items)
        live = [t for t in texts if isinstance(t, str)]
        encodings = iter(self.tokenizer.encode_batch(live, add_special_tokens=self.step.add_special_tokens))
        checked = [t if isinstance(t, ModelportError) else self._fits(next(encodings)) for t in texts]
        lengths = [len(e.ids) for e in checked if isinstance(e, Encoding)]
        width = self.step.max_length if self.step.padding == "max_length" else max(lengths, default=0)
        return [e if isinstance(e, ModelportError) else self._tensors(e, width) for e in checked]

    def _text(self, item: object) -> str:
        name = self.label
        if isinstance(item, bytes | bytearray | memoryview):
            try:
                return bytes(item).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidArgumentError(f"input {name}: text is not valid UTF-8 (at byte {exc.start})") from None
        if not isinstance(item, str):
            raise InvalidArgumentError(f"input {name}: expected text, got {type(item).__name__}")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(f"input {name}: text is not valid Unicode (at {exc.start})") from None
        return item

    def _fits(self, encoding: Encoding) -> Encoding | ModelportError:
        if len(encoding.ids) <= self.step.max_length:
            return encoding
        return InvalidArgumentError(
            f"input {self.label}: text is {len(encoding.ids)} tokens, over the limit of "
            f"{self.step.max_length} (truncation is off)"
        )

    def _tensors(self, encoding: Encoding, width: int) -> Arrays:
        pad = width - len(encoding.ids)
        values = {
            "ids": list(encoding.ids) + [self.pad_id] * pad,
            "attention_mask": list(encoding.attention_mask) + [0] * pad,
            "type_ids": list(encoding.type_ids) + [0] * pad,
        }
        return {
            name: np.asarray([values[field]], dtype=self.dtypes[field])
            for field, name in self.names.items()
            if name is not None
        }


def _dtype(step: TextStep, context: ProcessingContext, name: str) -> np.dtype[Any]:
    if step.dtype is not None:
        return np.dtype(step.dtype)
    spec = context.input_spec(name) if context.manifest is not None else None
    return np.dtype(spec.dtype if spec is not None and spec.dtype in ("int32", "int64") else "int64")
