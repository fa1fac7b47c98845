"""Bad inputs raise the right Python exception with a message naming what was expected and what
was given, and never take the interpreter down (a crash would end this test process)."""
import numpy as np
import pytest

import needle as ndl
from needle import array_api as nd

NO_CUDA = "this build has no CUDA|CUDA is not available|no GPU|no CUDA device|does not exist"


def test_shape_mismatch_in_add():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        nd.ones(2, 3) + nd.ones(3, 2)


def test_impossible_broadcast_to():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        nd.ones(2, 3).broadcast_to((3, 3))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        nd.ones(2, 3).expand(4, 3)


def test_impossible_reshape_and_view():
    with pytest.raises(ValueError, match=r"\(2, 3\).*6 elements.*\(4, 2\)"):
        nd.ones(2, 3).reshape(4, 2)
    with pytest.raises(ValueError, match=r"-1"):
        nd.ones(2, 3).reshape(-1, -1)
    with pytest.raises(ValueError, match=r"view.*\(3, 2\).*\(6,\)"):
        nd.ones(2, 3).T.view(6)


@pytest.mark.parametrize("key,match", [
    (5, r"index 5 .*size 2"), (-3, r"index -3 .*size 2"), ((0, 7), r"index 7 .*size 3"),
    ((0, 0, 0), r"too many indices.*2-dimensional.*3"), ((..., 0, ...), r"single ellipsis")])
def test_out_of_range_indices(key, match):
    x = nd.ones(2, 3)
    with pytest.raises(IndexError, match=match):
        x[key]
    with pytest.raises(IndexError, match=match):
        x[key] = 1.0


def test_out_of_range_dims():
    x = nd.ones(2, 3)
    with pytest.raises(IndexError, match=r"dimension 5.*\[-2, 1\]"):
        x.sum(dim=5)
    with pytest.raises(IndexError, match=r"dimension 3"):
        x.transpose(0, 3)
    with pytest.raises(IndexError, match=r"index_select: index 5.*size 2"):
        x.index_select(0, nd.NDArray([5]))


@pytest.mark.parametrize("make", [lambda: nd.NDArray(3.0), lambda: ndl.tensor(3.0)],
                         ids=["ndarray", "tensor"])
def test_zero_dim_arrays_have_no_dim_to_index(make):
    # A 0-d array accepts dim 0 and -1 where PyTorch does (reductions, softmax, flip), but the ops
    # that index the dim itself have none to index: these read past the shape before the check.
    x = make()
    no_dims = r"{}: dimension {} was given, but the array is 0-d"
    with pytest.raises(IndexError, match=no_dims.format("size", 0)):
        x.size(0)
    with pytest.raises(IndexError, match=no_dims.format("size", -1)):
        x.size(-1)
    with pytest.raises(IndexError, match=no_dims.format("split", 0)):
        x.split(1)
    with pytest.raises(IndexError, match=no_dims.format("split", 0)):
        x.split([1])
    with pytest.raises(IndexError, match=no_dims.format("chunk", 0)):
        x.chunk(2)
    assert float(x.flip(0)) == 3.0 and x.flip(-1).shape == ()  # as torch.flip
    assert float(x.sum(0)) == 3.0 and float(x.softmax(-1)) == 1.0
    with pytest.raises(IndexError, match=r"dimension 1 is out of range"):
        x.flip(1)
    with pytest.raises(IndexError, match=r"dimension 2 is out of range"):
        x.transpose(0, 2)
    if isinstance(x, nd.NDArray):
        with pytest.raises(IndexError, match=no_dims.format("index_select", 0)):
            x.index_select(0, nd.NDArray([0]))


def test_flip_dims_once_each():
    x = nd.NDArray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(x.flip((0, 1)).numpy(), x.numpy()[::-1, ::-1])
    for y in (x, ndl.tensor(x.numpy())):
        with pytest.raises(ValueError, match=r"flip: dim 1 appears more than once"):
            y.flip((1, -1))


def test_layer_norm_of_a_zero_dim_input():
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape.*shape \(\)"):
        ndl.nn.functional.layer_norm(ndl.tensor(1.0), -1)


def test_transpose_of_a_vector_checks_its_dims():
    with pytest.raises(IndexError, match=r"dimension 5 is out of range"):
        ndl.randn(3, requires_grad=True).transpose(0, 5)

@pytest.mark.parametrize("bad", ["float8", "complex64", "int"])
def test_bad_dtype_names(bad):
    if bad == "int":  # an alias needle accepts (int32), checked so the test can fail
        assert nd.zeros(1, dtype=bad).dtype == ndl.int32
        return
    with pytest.raises(TypeError, match=rf"'{bad}'.*bool, int32, int64, bfloat16, float32, float64"):
        nd.zeros(2, dtype=bad)
    with pytest.raises(TypeError, match=bad):
        nd.ones(2).astype(bad)


def test_unsupported_numpy_dtypes():
    with pytest.raises(TypeError, match=r"float16.*bfloat16.*float32"):
        ndl.NDArray(np.ones(3, np.float16))
    with pytest.raises(TypeError, match=r"complex128.*expected"):
        ndl.NDArray(np.ones(3, np.complex128))
    with pytest.raises(TypeError, match=r"uint64"):
        ndl.NDArray(np.ones(3, np.uint64))
    with pytest.raises(TypeError, match=r"str"):
        ndl.NDArray(["a", "b"])
    with pytest.raises(TypeError, match=r"expected a dtype.*42"):
        nd.zeros(2, dtype=42)


def test_bad_shapes_and_arguments():
    with pytest.raises(ValueError, match=r"\(-1,\).*non-negative"):
        nd.zeros(-1)
    with pytest.raises(TypeError, match=r"shape.*str"):
        nd.zeros("a")
    with pytest.raises(TypeError, match=r"shape \(an int or a sequence of ints\), got float"):
        nd.zeros(2.5)
    with pytest.raises(TypeError, match=r"shape: expected an int, got float"):
        nd.zeros(2, 2.5)
    with pytest.raises(ValueError, match=r"step must be non-zero"):
        nd.arange(0, 5, 0)
    with pytest.raises(ValueError, match=r"permute: dim 0 repeated"):
        nd.ones(2, 3).permute(0, 0)
    with pytest.raises(ValueError, match=r"permute: expected 2 dims.*got 1"):
        nd.ones(2, 3).permute(0)
    with pytest.raises(ValueError, match=r"slice step cannot be zero"):
        nd.ones(3)[::0]
    with pytest.raises(TypeError, match=r"invalid index of type bool"):
        nd.ones(3)[True]
    with pytest.raises(TypeError, match=r"invalid index of type list"):
        nd.ones(3)[[0, 1]]
    with pytest.raises(TypeError, match=r"full: expected a number, got <class 'str'>"):
        nd.full((2,), "x")


def test_joining_and_matmul_errors():
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        nd.cat([nd.ones(2, 3), nd.ones(2, 4)], 0)
    with pytest.raises(ValueError, match=r"non-empty"):
        nd.cat([], 0)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        nd.stack([nd.ones(2, 3), nd.ones(3, 2)])
    with pytest.raises(ValueError, match=r"sum to 7.*size 6"):
        nd.split(nd.arange(6), [2, 5])
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(2, 3\)"):
        nd.ones(2, 3) @ nd.ones(2, 3)
    with pytest.raises(TypeError, match=r"where: expected a bool condition, got int64"):
        nd.where(nd.arange(3), 1, 2)


def test_dtype_errors_in_operators():
    x = nd.ones(3)
    with pytest.raises(TypeError, match=r"expects bool operands, got float32 and float32"):
        x & x
    with pytest.raises(TypeError, match=r"~ expects a bool array, got dtype float32"):
        ~x
    with pytest.raises(TypeError, match=r"neg.*bool"):
        -(x > 0)
    y = nd.zeros(3, dtype=ndl.int64)
    with pytest.raises(TypeError, match=r"float32.*int64"):
        y += 0.5
    with pytest.raises(TypeError, match=r"unsupported operand"):
        x + "text"
    with pytest.raises(TypeError, match=r"add: expected an NDArray.*str"):
        nd.add(x, "text")


def test_scalar_conversions():
    with pytest.raises(ValueError, match=r"one element.*\(2, 3\).*6 elements"):
        nd.ones(2, 3).item()
    with pytest.raises(ValueError, match=r"6 elements is ambiguous"):
        bool(nd.ones(2, 3))
    with pytest.raises(TypeError, match=r"len\(\) of a 0-d array"):
        len(ndl.NDArray(1.0))
    with pytest.raises(ValueError, match=r"max/min.*empty.*\(0, 3\)"):
        nd.zeros(0, 3).max()


def test_bad_device_strings():
    with pytest.raises(ValueError, match=r"'gpu'.*'cpu', 'cuda' or 'cuda:N'"):
        ndl.device("gpu")
    with pytest.raises(ValueError, match=r"'cuda:x'"):
        nd.zeros(2, device="cuda:x")
    with pytest.raises(TypeError, match=r"expected a device.*3"):
        nd.zeros(2, device=3)


@pytest.mark.skipif(ndl.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_without_cuda():
    with pytest.raises(RuntimeError, match=NO_CUDA):
        nd.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match=NO_CUDA):
        nd.ones(2).cuda()
    with pytest.raises(RuntimeError, match=NO_CUDA):
        nd.ones(2).to("cuda:0")
    with pytest.raises(RuntimeError, match=NO_CUDA):
        ndl.NDArray(np.ones(2), device="cuda")
    with pytest.raises(RuntimeError, match=NO_CUDA):
        ndl.cuda.memory_allocated()
    with pytest.raises(RuntimeError, match=NO_CUDA):
        ndl.cuda.synchronize()
    assert ndl.cuda.device_count() == 0


@pytest.mark.skipif(not ndl.cuda.is_available(), reason="needs a GPU")
def test_mixed_devices_and_missing_gpu_index():
    x = nd.ones(2)
    y = nd.ones(2, device="cuda")
    with pytest.raises(RuntimeError, match=r"cpu.*cuda|cuda.*cpu"):
        x + y
    with pytest.raises(RuntimeError, match=NO_CUDA):
        nd.zeros(1, device=f"cuda:{ndl.cuda.device_count()}")


def test_out_of_memory_is_a_runtime_error():
    assert issubclass(ndl.OutOfMemoryError, RuntimeError)
    with pytest.raises(ndl.OutOfMemoryError, match=r"1125899906842624 bytes"):
        nd.empty(2 ** 48, dtype=ndl.float32)  # 4 PiB


def test_buffer_protocol_refusals_are_python_errors():
    # pybind11's default buffer hook would abort the interpreter on these.
    with pytest.raises(BufferError, match=r"bfloat16"):
        memoryview(nd.ones(3, dtype=ndl.bfloat16))
    with pytest.raises(BufferError, match=r"C-contiguous"):
        np.frombuffer(nd.ones(2, 3).T, dtype=np.float32)
    with pytest.raises(BufferError, match=r"writable.*broadcast"):
        _request_writable_strided_buffer(nd.ones(1, 3).expand(2, 3))


def _request_writable_strided_buffer(x):
    """PyObject_GetBuffer(x, PyBUF_STRIDES | PyBUF_WRITABLE): what a C extension that writes into
    strided memory asks for. ctypes raises the Python error the call sets."""
    import ctypes

    class Py_buffer(ctypes.Structure):
        _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
                    ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int),
                    ("ndim", ctypes.c_int), ("format", ctypes.c_char_p),
                    ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                    ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]

    PyBUF_STRIDES_WRITABLE = 0x0018 | 0x0001
    view = Py_buffer()
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), ctypes.c_int]
    get(x, ctypes.byref(view), PyBUF_STRIDES_WRITABLE)


def test_sizes_that_overflow_int64_are_refused():
    # Each wrapped before: (2**62, 4) had 0 elements, and 2**61 float64 values took 0 bytes, so
    # filling them wrote past a tiny buffer and crashed.
    with pytest.raises(ValueError, match=r"\(4611686018427387904, 4\): its number of elements"):
        nd.zeros(2 ** 62, 4)
    with pytest.raises(ValueError, match=r"elements of float64 take more bytes than fit"):
        nd.zeros(2 ** 61, dtype=ndl.float64)
    with pytest.raises(ValueError, match=r"number of elements does not fit in int64"):
        nd.zeros(0).reshape(2 ** 62, 4)
    with pytest.raises(ValueError, match=r"number of elements does not fit in int64"):
        nd.zeros(0).reshape(2 ** 62, 4, 0)  # zero elements, but its strides would overflow
    with pytest.raises(ValueError, match=r"number of elements does not fit in int64"):
        nd.ones(1).broadcast_to((2 ** 62, 4))
    with pytest.raises(ValueError, match=r"number of elements does not fit in int64"):
        nd.eye(2 ** 32)
    with pytest.raises(ValueError, match=r"eye: m must be non-negative, got -2"):
        nd.eye(3, -2)
    with pytest.raises(ValueError, match=r"arange: .* more than an array can hold"):
        nd.arange(2 ** 62)
    with pytest.raises(ValueError, match=r"reach past the int64 range"):
        nd.zeros(4).as_strided((3,), (2 ** 62,), 0)
    assert nd.zeros(2 ** 62, 0).shape == (2 ** 62, 0)  # empty, and its strides fit
    np.testing.assert_array_equal(nd.eye(3, 5, dtype=ndl.int32).numpy(), np.eye(3, 5))
    np.testing.assert_array_equal(nd.eye(4, 2).numpy(), np.eye(4, 2))


def test_huge_slice_steps_and_chunk_counts_as_python():
    # (e - b + step - 1) / step overflowed: x[::2**63 - 1] was empty, not [0].
    x, values = nd.arange(5), list(range(5))
    bounds = [None, -2 ** 63, -6, -5, -1, 0, 2, 5, 6, 2 ** 63 - 1]
    steps = [-2 ** 63, -2 ** 62, -3, -1, 1, 2, 2 ** 62, 2 ** 63 - 1]
    for b in bounds:
        for e in bounds:
            for s in steps:
                assert list(x[b:e:s].numpy()) == values[b:e:s], (b, e, s)
    # torch.chunk gives at most one part per element.
    assert [p.numpy().tolist() for p in x.chunk(2 ** 63 - 1)] == [[v] for v in values]


def test_block_sparse_layouts_too_big_to_index_are_refused():
    # ceil_div overflowed for a length near 2**63, and so did the blocks per head.
    with pytest.raises(ValueError, match=r"at most 2\^28 blocks per head"):
        ndl.nn.BlockSparseLayout.local(2 ** 62)
    with pytest.raises(ValueError, match=r"at most 2\^28 blocks per head"):
        ndl.nn.BlockSparseLayout.local(2 ** 63 - 1)
    # The CSR offsets run on over the heads in int32; the block mask took 2**31 * 1024 bytes.
    with pytest.raises(ValueError, match=r"at most 2\^31 blocks over all heads, got 2147483648"):
        ndl.nn.BlockSparseLayout.random(2048, 64, 3, num_heads=2 ** 31)


def test_ints_a_float64_would_round_stay_exact():
    # Python scalars travel as float64, which holds ints exactly only up to 2**53: 2**53 + 1 came
    # out as 2**53, and arange(2**62, 2**62 + 3) was empty. They now go through int64.
    big = 2 ** 53 + 1
    assert nd.arange(2 ** 53, 2 ** 53 + 4).numpy().tolist() == list(range(2 ** 53, 2 ** 53 + 4))
    assert nd.arange(2 ** 62, 2 ** 62 + 3).numpy().tolist() == list(range(2 ** 62, 2 ** 62 + 3))
    assert nd.arange(-2 ** 63, 2 ** 63 - 1, 2 ** 62).numpy().tolist() == list(
        range(-2 ** 63, 2 ** 63 - 1, 2 ** 62))
    assert nd.arange(5, 0, -2).numpy().tolist() == [5, 3, 1]
    assert nd.full((2,), big).numpy().tolist() == [big, big]
    assert nd.full((2,), big).dtype == ndl.int64
    assert ndl.full_like(ndl.tensor([1, 2]), big).numpy().tolist() == [big, big]
    assert (ndl.tensor([1]) + big).numpy().tolist() == [big + 1]
    assert (big - ndl.tensor([1])).numpy().tolist() == [big - 1]
    assert (ndl.tensor([1]).array * np.int64(big)).numpy().tolist() == [big]
    t, a = ndl.tensor([0, 0]), ndl.tensor([0, 0]).array
    t[0], a[1] = big, big
    assert t.numpy().tolist() == [big, 0] and a.numpy().tolist() == [0, big]
    assert (ndl.tensor([1.0]) + big).dtype == ndl.float32  # a float tensor stays float
    assert (ndl.tensor([big, 3]) == big).numpy().tolist() == [True, False]
    assert (ndl.tensor([1], dtype=ndl.int32) + 5).dtype == ndl.int32  # still a weak scalar
    # An int beyond int64 has no integer dtype (it was converted to int64 out of range).
    with pytest.raises(ValueError, match=r"does not fit in int64"):
        nd.full((1,), 2 ** 64)
    with pytest.raises(ValueError, match=r"does not fit in int64"):
        ndl.tensor([1]) + 2 ** 64


def test_values_an_integer_dtype_cannot_hold_are_refused():
    # A number written into an int32/int64 array was cast out of range (undefined behaviour in
    # C++: full((2,), 2**40, dtype=int32) gave -2**31 twice), and tensor([2**40], dtype=int32)
    # wrapped to 0. torch refuses such values; so does needle, naming the op, the value and dtype.
    i32 = ndl.int32
    cases = [
        ("full", lambda: nd.full((2,), 2 ** 40, dtype=i32)),
        ("full", lambda: nd.full((2,), 1e30, dtype=ndl.int64)),
        ("full", lambda: nd.full((2,), float("nan"), dtype=i32)),
        ("fill_", lambda: ndl.zeros(2, dtype=i32).fill_(2 ** 31)),
        ("fill_", lambda: nd.zeros(2, dtype=i32).fill_(float("inf"))),
        ("fill_", lambda: ndl.zeros(2, dtype=i32).__setitem__(0, -2 ** 31 - 1)),
        ("add", lambda: ndl.zeros(2, dtype=i32) + 2 ** 40),
        ("mul", lambda: 2 ** 40 * nd.zeros(2, dtype=i32)),
        ("where", lambda: ndl.where(ndl.tensor([True]), ndl.tensor([1], dtype=i32), 2 ** 40)),
        ("where", lambda: nd.where(nd.zeros(1, dtype=ndl.bool), nd.zeros(1, dtype=i32), 2 ** 40)),
        ("masked_fill",
         lambda: ndl.tensor([1], dtype=i32).masked_fill(ndl.tensor([True]), 2 ** 33)),
        ("minimum", lambda: ndl.tensor([1], dtype=i32).clamp(max=2 ** 40)),
        ("arange", lambda: nd.arange(0, 2 ** 40, 2 ** 38, dtype=i32)),
        ("arange", lambda: nd.arange(0.0, 1e10, 1e9, dtype=i32)),
        ("tensor", lambda: ndl.tensor([1, 2 ** 40], dtype=i32)),
        ("tensor", lambda: ndl.tensor([1.5e10], dtype=i32)),
        ("tensor", lambda: ndl.tensor([0.0, float("nan")], dtype=ndl.int64)),
    ]
    for op, make in cases:
        with pytest.raises(ValueError, match=rf"^{op}: the value .* does not fit in int(32|64)"):
            make()
    t = ndl.tensor([7, 8], dtype=i32)
    with pytest.raises(ValueError):
        t.fill_(2 ** 40)
    assert t.tolist() == [7, 8]  # nothing was written
    # In range they work, a float truncating toward zero as a cast does (torch.fill_ too).
    assert nd.full((1,), 2 ** 31 - 1, dtype=i32).tolist() == [2 ** 31 - 1]
    assert ndl.zeros(2, dtype=i32).fill_(-2.9).tolist() == [-2, -2]
    assert ndl.tensor([1.7, -2.5], dtype=i32).tolist() == [1, -2]
    assert nd.arange(2 ** 31 - 2, 2 ** 31, dtype=i32).tolist() == [2 ** 31 - 2, 2 ** 31 - 1]
    assert ndl.zeros(2, dtype=ndl.bool).fill_(2 ** 70).tolist() == [True, True]
    # An int to a negative int power was 0 (3 ** -1); torch and NumPy refuse it.
    with pytest.raises(ValueError, match=r"pow: integers to negative integer powers are not allowed"):
        ndl.tensor([3]) ** -1
    assert (ndl.tensor([3]) ** 2).tolist() == [9] and (ndl.tensor([4.0]) ** -1).tolist() == [0.25]
    # A comparison has an answer for any int: int32 arrays compare in int64.
    assert (ndl.tensor([1, 2], dtype=i32) < 2 ** 40).tolist() == [True, True]
    assert (nd.zeros(2, dtype=i32) == -2 ** 40).tolist() == [False, False]


def test_clamp_fill_and_masked_fill_take_numbers_as_torch_does():
    big = 2 ** 53 + 1  # float64 rounds it to 2**53
    x = ndl.tensor([big, 5])
    # An int tensor clamped by ints stays int (it became float32), exactly; a float bound promotes.
    assert x.clamp(0, big + 2).dtype == ndl.int64
    assert x.clamp(0, big + 2).tolist() == [big, 5]
    assert x.clamp(big + 2).tolist() == [big + 2, big + 2]
    assert nd.clamp(x.array, min=big + 2).tolist() == [big + 2, big + 2]
    assert nd.clip(nd.arange(4), 1, 2).tolist() == [1, 1, 2, 2]
    assert x.clamp(0.5, 6).dtype == ndl.float32
    assert ndl.zeros(2, dtype=ndl.int64).fill_(big).tolist() == [big, big]
    assert nd.zeros(2, dtype=ndl.int64).fill_(np.int64(big)).tolist() == [big, big]
    assert x.masked_fill(ndl.tensor([False, True]), big).tolist() == [big, big]
    assert (ndl.tensor([1]) + np.int64(big)).tolist() == [big + 1]  # NumPy ints stay exact too
    # where promotes a number branch as a binary op would: an int tensor and 0.5 give float32.
    c = ndl.tensor([True, False])
    assert ndl.where(c, ndl.tensor([1, 2]), 0.5).tolist() == [1.0, 0.5]
    assert ndl.where(c, big, 0).tolist() == [big, 0]
    assert ndl.where(c, 1, 2.5).dtype == ndl.float32
    # A one-element tensor or array stands for its value (torch takes 0-d tensors).
    assert ndl.zeros(2).fill_(ndl.tensor([3.0])).tolist() == [3.0, 3.0]
    assert nd.zeros(2).fill_(np.array(4.0)).tolist() == [4.0, 4.0]
    assert ndl.tensor([1.0, 9.0]).clamp(max=ndl.tensor(2.0)).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="fill_: expected a number or a one-element array, got an"):
        ndl.zeros(2).fill_(ndl.tensor([3.0, 4.0]))
    with pytest.raises(TypeError, match="masked_fill: expected a number, got <class 'str'>"):
        ndl.zeros(2).masked_fill(ndl.tensor([True, False]), "x")
    # The repr prints int64 values exactly (it printed them through a double: 2**63 - 1 as -2**63).
    assert "9223372036854775807" in repr(ndl.tensor([2 ** 63 - 1, 1]))
    assert f"{big}" in repr(nd.full((1,), big))
    assert repr(ndl.zeros(0).mean()).startswith("tensor(nan,")  # printf wrote 0/0 as -nan
