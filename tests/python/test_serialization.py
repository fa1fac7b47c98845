"""save/load of tensor dicts as safetensors; corrupt files raise ValueError naming the file."""
import numpy as np
import pytest

import needle as ndl
from needle.serialization import load, load_metadata, save


def test_round_trip_dtypes_and_metadata(tmp_path):
    path = tmp_path / "x.safetensors"
    state = {"f": ndl._C.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)),
             "i": ndl._C.Tensor(np.arange(4, dtype=np.int64))}
    save(state, path, metadata={"step": "7"})
    back = load(path)
    assert list(back) == ["f", "i"]
    np.testing.assert_array_equal(back["f"].numpy(), state["f"].numpy())
    assert back["i"].dtype == ndl.int64
    assert load_metadata(path) == {"step": "7"}


def test_truncated_file_is_rejected_by_name(tmp_path):
    path = tmp_path / "t.safetensors"
    save({"w": ndl._C.Tensor(np.ones(16, dtype=np.float32))}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="t.safetensors"):
        load(path)
