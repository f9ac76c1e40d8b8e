from __future__ import annotations

import numpy as np

from modelport.golden import GoldenCase, concrete_shape, load_golden, random_inputs, save_golden
from modelport.manifest import TensorSpec
from modelport.tensors import value_outside


def test_round_trip_keeps_every_dtype_without_pickle(tmp_path):
    inputs = {
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask": np.array([[True, False, True]] * 2),
        "text": np.array([b"a", b"bc"], dtype=object),
        "half": np.ones((2, 2), np.float16),
    }
    cases = [GoldenCase(inputs, {"out": np.zeros((2, 4), np.float32)})]
    save_golden(tmp_path / "golden.npz", cases)
    (loaded,) = load_golden(tmp_path / "golden.npz")
    for name, value in inputs.items():
        assert loaded.inputs[name].dtype == value.dtype, name
        assert np.array_equal(loaded.inputs[name], value), name
    assert loaded.batch_size == 2
    with np.load(tmp_path / "golden.npz", allow_pickle=False) as data:  # readable without pickle
        assert len(data.files) == 5


def test_random_inputs_respect_specs_and_ranges():
    specs = (
        TensorSpec.parse("ids:int64:-1x-1:3..7"),
        TensorSpec.parse("image:float32:-1x1x8x8:0..1"),
        TensorSpec.parse("flag:bool:-1"),
    )
    arrays = random_inputs(specs, batch=4, dynamic=5, rng=np.random.default_rng(0))
    assert arrays["ids"].shape == (4, 5) and arrays["ids"].dtype == np.int64
    assert arrays["ids"].min() >= 3 and arrays["ids"].max() < 7
    assert arrays["image"].shape == (4, 1, 8, 8) and arrays["image"].min() >= 0 and arrays["image"].max() <= 1
    assert arrays["flag"].dtype == np.bool_
    assert concrete_shape(specs[0], 2, 9) == (2, 9)


def test_golden_inputs_always_pass_the_server_s_range_check():
    """Export draws golden inputs from the range the server enforces: the two readings of LOW..HIGH agree."""
    specs = tuple(
        TensorSpec.parse(text)
        for text in ("a:int64:-1x64:0..2", "b:int32:-1x64:0.5..3.5", "c:float32:-1x64:-1..1", "d:uint8:-1x64:0..256")
    )
    for seed in range(20):
        arrays = random_inputs(specs, batch=8, dynamic=1, rng=np.random.default_rng(seed))
        for spec in specs:
            assert spec.value_range is not None
            assert value_outside(arrays[spec.name], *spec.value_range) is None, (spec.name, seed)
    assert set(np.unique(arrays["b"])) == {1, 2, 3}, "0.5..3.5 holds the integers 1, 2 and 3"
