"""The image step against torchvision's PIL transforms, and every malformed payload."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelport.errors import InvalidArgumentError, PayloadTooLargeError, SpecError
from modelport.manifest import ModelManifest, SourceInfo, TensorSpec
from modelport.processing import ImageStep, ProcessingContext
from modelport.processing.image import ImageProcessor, center_crop, decode_image, resize, to_array
from tests.processing import reference
from tests.processing.images import encode, photo, png_bomb, png_header

HERE = ProcessingContext(Path("."))
SIZES = [(500, 375), (375, 500), (224, 224), (257, 255), (100, 37), (31, 64), (1, 1)]
FILTERS = ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


def _same(a: Image.Image, b: Image.Image) -> None:
    assert a.size == b.size and a.mode == b.mode
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("size", [256, 224, 7, [120, 90]])
def test_resize_matches_torchvision(width, height, size):
    image = photo(width, height)
    expected = reference.tv_resize(image, size)
    _same(resize(image, tuple(size) if isinstance(size, list) else size), expected)


def test_resize_int_keeps_torchvision_truncation():
    # int(256 * 500 / 333) = 384: the long side is truncated, not rounded
    assert resize(photo(333, 500), 256).size == (256, 384)
    assert resize(photo(500, 333), 256).size == (384, 256)


def test_resize_returns_the_image_when_the_size_already_matches():
    image = photo(256, 300)
    assert resize(image, 256) is image


@pytest.mark.parametrize("interpolation", FILTERS)
def test_every_filter_matches_torchvision(interpolation):
    image = photo(300, 200, seed=3)
    _same(resize(image, 150, interpolation), reference.tv_resize(image, 150, interpolation))


@pytest.mark.parametrize(("width", "height"), [*SIZES, (223, 225), (226, 100)])
@pytest.mark.parametrize("size", [224, (100, 50), (3, 300), 1])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_center_crop_matches_torchvision_including_padding(width, height, size, mode):
    image = photo(width, height, mode)
    _same(center_crop(image, size), reference.tv_center_crop(image, size))


def test_center_crop_pads_with_zeros_when_larger():
    cropped = np.asarray(center_crop(Image.new("RGB", (2, 2), (255, 255, 255)), 4))
    assert cropped.shape == (4, 4, 3)
    assert cropped[1:3, 1:3].min() == 255 and cropped[0].max() == 0 and cropped[:, 3].max() == 0


@pytest.mark.torch
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_imagenet_pipeline_is_bit_identical_to_torchvision(width, height):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    image = photo(width, height, seed=width)
    ours = ImageProcessor(ImageStep(resize=256, center_crop=224, mean=tuple(mean), std=tuple(std)), HERE).process(
        encode(image)
    )["input"]
    expected = reference.tv_normalize(
        reference.tv_to_tensor(reference.tv_center_crop(reference.tv_resize(image, 256), 224)), mean, std
    )
    assert ours.dtype == np.float32 and ours.shape == (1, 3, 224, 224)
    assert np.array_equal(ours[0], expected.numpy())


@pytest.mark.torch
def test_to_tensor_scaling_is_bit_identical_for_every_byte():
    image = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
    assert np.array_equal(to_array(image, 1 / 255)[..., 0], reference.tv_to_tensor(image).numpy()[0])


def _process(data, **options):
    return ImageProcessor(ImageStep(**options), HERE).process(data)["input"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_every_accepted_format_decodes(fmt):
    image = photo(40, 30)
    out = _process(encode(image, fmt), scale=1.0, normalize=False)
    assert out.shape == (1, 3, 30, 40)
    if fmt in ("PNG", "BMP"):  # lossless
        assert np.array_equal(out[0].transpose(1, 2, 0), np.asarray(image).astype(np.float32))


def test_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = _process(data, scale=1.0, normalize=False, layout="NHWC")
    assert out[0, 4, 4].tolist() == [255.0, 0.0, 0.0]


def test_exif_orientation_is_applied_unless_disabled():
    image = photo(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    assert _process(data, normalize=False).shape == (1, 3, 40, 20)
    assert _process(data, normalize=False, exif_transpose=False).shape == (1, 3, 20, 40)


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("L", 1), ("RGBA", 4), ("LA", 2)])
def test_colour_mode(mode, channels):
    assert _process(encode(photo(10, 10, "RGBA")), mode=mode, normalize=False).shape == (1, channels, 10, 10)


def test_layout_dtype_scale_and_normalisation():
    image = Image.new("RGB", (3, 2), (255, 0, 51))
    out = _process(encode(image), layout="NHWC", dtype="float16", scale=1.0, mean=(0, 0, 1), std=(255, 1, 10))
    assert out.dtype == np.float16 and out.shape == (1, 2, 3, 3)
    assert out[0, 0, 0].tolist() == [1.0, 0.0, 5.0]
    raw = _process(encode(image), dtype="uint8", scale=1.0, normalize=False)
    assert raw.dtype == np.uint8 and raw[0, :, 0, 0].tolist() == [255, 0, 51]


def test_an_integer_dtype_takes_the_pixel_values_unscaled():
    image = photo(7, 5)
    raw = _process(encode(image), dtype="uint8", normalize=False)
    assert raw.dtype == np.uint8 and np.array_equal(raw[0], np.asarray(image).transpose(2, 0, 1))
    centred = _process(encode(image), dtype="int16", mean=(128,), std=(1,))
    assert np.array_equal(centred[0], np.asarray(image, np.int16).transpose(2, 0, 1) - 128)
    assert ImageStep(dtype="uint8").scale == 1.0 and ImageStep(dtype="uint8", scale=0.5).scale == 0.5
    assert ImageStep().scale == 1 / 255


@pytest.mark.parametrize(
    "options",
    [{"dtype": "uint8", "scale": 1 / 255}, {"dtype": "int8"}, {"dtype": "uint8", "mean": (0.5,), "std": (0.5,)}],
)
def test_an_integer_dtype_that_cannot_hold_the_values_fails_at_build(options):
    with pytest.raises(SpecError, match=f"dtype {options['dtype']} cannot hold the pixel values"):
        ImageProcessor(ImageStep(**options), HERE)


@pytest.mark.parametrize(("width", "height"), [(257, 513), (40, 9)])
def test_one_value_sizes_are_read_as_torchvision_reads_them(width, height):
    image = photo(width, height)
    step = ImageStep.model_validate({"resize": [16], "center_crop": [12]})
    assert (step.resize, step.center_crop) == (16, 12)
    expected = reference.tv_center_crop(reference.tv_resize(image, [16]), 12)
    got = ImageProcessor(step, HERE).process(encode(image))["input"]
    assert np.array_equal(got[0], to_array(expected, 1 / 255, channels_first=True))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_an_images_base64_text_is_the_image(fmt):
    data = encode(photo(17, 11), fmt)
    text = base64.b64encode(data)
    assert np.array_equal(_process(text), _process(data))
    assert np.array_equal(_process(b"  " + text + b"\r\n"), _process(data))
    with pytest.raises(InvalidArgumentError, match=r"not an image .*, nor the base64 text of one"):
        _process(base64.b64encode(b"GIF89a but not really"))
    with pytest.raises(InvalidArgumentError, match="not an image"):
        _process(text[:-1])  # not base64 any more (length), and not an image


def _manifest(**spec):
    return ModelManifest(
        name="m",
        version=1,
        family="f",
        variant="onnx",
        format="onnx",
        artifact="model.onnx",
        inputs=(TensorSpec(name="pixels", dtype="float32", shape=(-1, 4, 4, 3), **spec),),
        outputs=(TensorSpec(name="logits", dtype="float32", shape=(-1, 2)),),
        source=SourceInfo(framework="torch", kind="module", location="x"),
    )


def test_input_name_layout_and_normalisation_default_to_the_manifest(tmp_path):
    context = ProcessingContext(tmp_path, _manifest(layout="NHWC", mean=(0.5,), std=(0.5,)))
    out = ImageProcessor(ImageStep(), context).process(encode(Image.new("RGB", (4, 4), (255, 0, 255))))
    assert list(out) == ["pixels"] and out["pixels"].shape == (1, 4, 4, 3)
    assert out["pixels"][0, 0, 0].tolist() == [1.0, -1.0, 1.0]
    plain = ImageProcessor(ImageStep(normalize=False), context).process(encode(Image.new("RGB", (4, 4))))
    assert plain["pixels"].max() == 0.0


@pytest.mark.parametrize(
    ("framework", "shape"), [("tf", (1, 4, 4, 3)), ("torch", (1, 3, 4, 4)), ("onnx", (1, 3, 4, 4))]
)
def test_without_a_layout_a_keras_model_takes_nhwc_images(tmp_path, framework, shape):
    manifest = _manifest().model_copy(update={"source": SourceInfo(framework=framework, kind="k", location="x")})
    out = ImageProcessor(ImageStep(), ProcessingContext(tmp_path, manifest)).process(encode(photo(4, 4)))
    assert out["pixels"].shape == shape
    pinned = ProcessingContext(tmp_path, _manifest(layout="NCHW").model_copy(update={"source": manifest.source}))
    assert ImageProcessor(ImageStep(), pinned).layout == "NCHW"


def _manifest_of(dtype: str) -> ModelManifest:
    spec = TensorSpec(name="pixels", dtype=dtype, shape=(-1, 4, 4, 3), layout="NHWC")
    return _manifest().model_copy(update={"inputs": (spec,)})


def test_without_a_dtype_the_step_makes_the_model_inputs(tmp_path):
    """A uint8 model's image step without ``dtype`` made float32 pixels / 255: every request was a 400
    ('datatype FP32 does not match the model's UINT8') no client could fix."""
    image = encode(Image.new("RGB", (4, 4), (255, 7, 0)))
    uint8 = ProcessingContext(tmp_path, _manifest_of("uint8"))
    pixels = ImageProcessor(ImageStep(), uint8).process(image)["pixels"]
    assert pixels.dtype == np.uint8 and pixels[0, 0, 0].tolist() == [255, 7, 0]
    doubled = ImageProcessor(ImageStep(scale=2), ProcessingContext(tmp_path, _manifest_of("int16")))  # its scale
    assert doubled.process(image)["pixels"][0, 0, 0].tolist() == [510, 14, 0]
    half = ImageProcessor(ImageStep(), ProcessingContext(tmp_path, _manifest_of("float16"))).process(image)["pixels"]
    assert half.dtype == np.float16 and half[0, 0, 0].tolist() == pytest.approx([1.0, 7 / 255, 0.0], abs=1e-3)
    forced = ImageProcessor(ImageStep(dtype="float32"), uint8)  # a dtype of its own wins
    assert (forced.step.dtype, forced.step.scale) == ("float32", pytest.approx(1 / 255))


def test_a_step_naming_an_unknown_input_or_mismatched_channels_fails_at_build(tmp_path):
    with pytest.raises(SpecError, match="no input 'image'"):
        ImageProcessor(ImageStep(input="image"), ProcessingContext(tmp_path, _manifest()))
    with pytest.raises(SpecError, match="3 mean/std values for mode L"):
        ImageProcessor(ImageStep(mode="L", mean=(0, 0, 0), std=(1, 1, 1)), ProcessingContext(tmp_path))


BAD = {
    "empty": (b"", InvalidArgumentError, "empty payload"),
    "not an image": (b"hello, this is text", InvalidArgumentError, "not an image in an accepted format"),
    "truncated": (encode(photo(64, 64), "PNG")[:300], InvalidArgumentError, "cannot decode"),
    "truncated jpeg header": (encode(photo(64, 64), "JPEG")[:400], InvalidArgumentError, "unreadable image header"),
    "truncated jpeg scan": (encode(photo(64, 64), "JPEG")[:-500], InvalidArgumentError, "cannot decode"),
    "50000x50000 header": (png_header(50_000, 50_000), InvalidArgumentError, "pixel|decompression"),
    "over max_pixels": (png_header(8000, 6000), InvalidArgumentError, "8000x6000 pixels is over the limit"),
    "tiff": (encode(photo(4, 4), "TIFF"), InvalidArgumentError, "not an image in an accepted format"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_payloads_are_client_errors_naming_the_input(case):
    data, error, message = BAD[case]
    with pytest.raises(error, match=message) as caught:
        _process(data)
    assert "'input'" in caught.value.message


def test_header_limit_holds_even_when_pillow_limit_is_lifted(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # what TorchServe's VisionHandler does
    with pytest.raises(InvalidArgumentError, match="50000x50000 pixels is over the limit"):
        _process(png_header(50_000, 50_000))


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_bomb(3000, 3000)
    assert len(bomb) < 20_000
    with pytest.raises(InvalidArgumentError, match="3000x3000 pixels is over the limit of 1000000"):
        _process(bomb, max_pixels=1_000_000)


def test_pillow_global_limit_is_left_as_it_was():
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InvalidArgumentError):
        _process(png_header(50_000, 50_000))
    assert before == Image.MAX_IMAGE_PIXELS


def test_byte_limit_is_a_payload_too_large_error():
    with pytest.raises(PayloadTooLargeError, match="over the limit of 100"):
        _process(encode(photo(32, 32)), max_bytes=100)


def test_non_bytes_items_are_refused():
    with pytest.raises(InvalidArgumentError, match="expected image bytes, got str"):
        _process("aGVsbG8=")


def test_a_bad_item_fails_alone():
    step = ImageStep(resize=8, center_crop=8)
    results = ImageProcessor(step, HERE).__call__([encode(photo(20, 10)), b"", b"junk"])
    assert isinstance(results[0], dict) and results[0]["input"].shape == (1, 3, 8, 8)
    assert [type(r) for r in results[1:]] == [InvalidArgumentError, InvalidArgumentError]


def test_decode_image_returns_a_loaded_image_in_the_requested_mode():
    image = decode_image(encode(photo(5, 6, "L")), ImageStep(), "x")
    assert image.mode == "RGB" and image.size == (5, 6)
