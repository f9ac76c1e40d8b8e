"""TFLite conversions that fail for a reason the converter's message hides, said in the user's terms."""

from __future__ import annotations

import importlib.metadata
import re

from modelport.errors import ConversionError
from modelport.exporters.artifact import describe_failure
from modelport.parity import REDUCED_PRECISION

__all__ = [
    "complex_failure",
    "cond_failure",
    "data_dependent_failure",
    "float16_failure",
    "missing_kernel",
    "transposed_conv_failure",
]

_MISSING_KERNEL = re.compile(r"Didn't find op for builtin opcode '(\w+)'")
_COMPLEX = re.compile(r"element type: complex<")
# JAX's words (litert-torch lowers through it) for a size or value it needs while converting at static shapes
# litert-torch's words for a padded transposed convolution: a convolution with an input dilation it cannot legalize
_TRANSPOSED_CONV = re.compile(r"failed to legalize operation 'mhlo\.convolution'.*lhs_dilation", re.DOTALL)
# litert-torch's words for torch.cond, which it has no lowering for
_COND = re.compile(r"Lowering not found: cond\b")
_DATA_DEPENDENT = re.compile(
    r"NonConcreteBooleanIndexError|ConcretizationTypeError"
    r"|GuardOnDataDependentSymNode|Could not guard on data-dependent"  # torch.export's, before litert-torch lowers
)
# the PyTorch ops litert-torch lowers to an op LiteRT's interpreter has no kernel for
_LOWERED_FROM = {"STABLEHLO_SORT": "torch.sort and torch.topk lower to it"}


def float16_failure(exc: BaseException, compute_dtype: str, float32_copy: str) -> ConversionError | None:
    """A model computing in float16 that failed to convert (TFLite's builtin ops mostly take float32: a Keras
    ``mixed_float16`` Dense is a float16 ``tf.MatMul``); None for a float32 model."""
    if compute_dtype not in REDUCED_PRECISION:
        return None
    return ConversionError(
        f"{describe_failure(exc)}; the model computes in {compute_dtype}, which TFLite's builtin ops take in few "
        f"places: convert a float32 copy ({float32_copy}), and add --quantize float16 for float16 weights"
    )


def missing_kernel(exc: BaseException) -> ConversionError | None:
    """A converted model LiteRT cannot open because it has no kernel for one of its ops (LiteRT asks whether its
    binary is too old, but no release has one); None for another failure."""
    match = _MISSING_KERNEL.search(str(exc))
    if match is None:
        return None
    op = match.group(1)
    origin = f" ({_LOWERED_FROM[op]})" if op in _LOWERED_FROM else ""
    version = importlib.metadata.version("ai-edge-litert")
    return ConversionError(
        f"the converter wrote the op {op}{origin}, which LiteRT's interpreter (ai-edge-litert {version}) has no "
        f"kernel for: the model cannot run as TFLite (the other formats are not affected)"
    )


def complex_failure(exc: BaseException) -> ConversionError | None:
    """A model computing with complex tensors (``torch.stft``), which litert-torch fails to lower naming whichever
    op met one first ("Unsupported ir element type: complex<f32>" on a permute); None for another failure."""
    if _COMPLEX.search(describe_failure(exc)) is None:
        return None
    return ConversionError(
        f"{describe_failure(exc)}; the model computes with complex tensors (torch.stft, torch.fft), which TFLite has "
        f"no type for: compute such features before the model, or keep only real results right away "
        f"(torch.fft.rfft(x).abs() converts); the other formats are not affected"
    )


def transposed_conv_failure(exc: BaseException) -> ConversionError | None:
    """A padded ``nn.ConvTranspose2d`` (``padding=1``), which litert-torch lowers to a convolution with an input
    dilation that it then fails to legalize; None for another failure."""
    if _TRANSPOSED_CONV.search(describe_failure(exc)) is None:
        return None
    return ConversionError(
        f"{describe_failure(exc)}; litert-torch cannot convert a transposed convolution with padding "
        f"(nn.ConvTranspose2d(..., padding=p)): give it padding=0 and crop the output instead "
        f"(y[..., p:-p, p:-p], and output_padding by keeping one more row and column), which converts; the other "
        f"formats are not affected"
    )


def cond_failure(exc: BaseException) -> ConversionError | None:
    """A model branching with ``torch.cond``, which litert-torch cannot lower ("Lowering not found: cond"); None for
    another failure."""
    if _COND.search(describe_failure(exc)) is None:
        return None
    return ConversionError(
        f"{describe_failure(exc)}; the model branches with torch.cond, which litert-torch cannot convert to TFLite: "
        f"compute both branches and pick with torch.where for a TFLite variant; the other formats are not affected"
    )


def data_dependent_failure(exc: BaseException) -> ConversionError | None:
    """A model whose shapes depend on its input's values (boolean masking, ``torch.nonzero``, ``.item()``), which
    litert-torch cannot convert at static shapes; its error names JAX's abstract tracers. None for another failure."""
    if _DATA_DEPENDENT.search(describe_failure(exc)) is None:
        return None
    return ConversionError(
        f"{describe_failure(exc)}; the model needs its input's values to know its shapes or its path (boolean "
        f"masking, torch.nonzero, .item(), a Python `if` on a value: a detector keeping the boxes above a threshold), "
        f"which a TFLite conversion at static shapes cannot follow: return fixed-size outputs (all boxes and a keep "
        f"mask, or the top k) for a TFLite variant; the other formats are not affected"
    )
