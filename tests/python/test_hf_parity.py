"""Logit and generation parity with Hugging Face transformers for Pythia-70M- and OPT-125M-sized
models: transformers builds each from a config (random weights, nothing downloaded) and saves it
as safetensors; needle loads the folder and must give the same logits (max |diff| <= 1e-4 in
float32 with TF32 off) and the same 64 greedy tokens, on the CPU and on CUDA. The reverse
direction (needle's export read by transformers) and half-precision checkpoints are checked too.
Skips where torch or transformers is missing."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import needle as ndl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apps.generate import generate  # noqa: E402
from apps.models import PRESETS, from_pretrained, save_hf_checkpoint  # noqa: E402

TOLERANCE = 1e-4
PARAMETERS = {"pythia-70m": 70_426_624, "opt-125m": 125_239_296}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ndl.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def full_float32():
    """float32 products in full precision on both sides (TF32 would differ by ~1e-3)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    previous = ndl.get_float32_matmul_precision()
    ndl.set_float32_matmul_precision("highest")
    yield
    ndl.set_float32_matmul_precision(previous)


def hf_config(family):
    if family == "pythia-70m":
        return transformers.GPTNeoXConfig(
            vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
            intermediate_size=2048, hidden_act="gelu", rotary_pct=0.25, rotary_emb_base=10000,
            max_position_embeddings=2048, layer_norm_eps=1e-5, use_parallel_residual=True,
            tie_word_embeddings=False, attention_bias=True, bos_token_id=0, eos_token_id=0)
    return transformers.OPTConfig(
        vocab_size=50272, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        ffn_dim=3072, max_position_embeddings=2048, word_embed_proj_dim=768,
        do_layer_norm_before=True, activation_function="relu", enable_bias=True,
        dropout=0.0, attention_dropout=0.0, tie_word_embeddings=True, pad_token_id=1,
        bos_token_id=2, eos_token_id=2)


def save_pretrained(model, path):
    try:
        model.save_pretrained(path, safe_serialization=True)
    except TypeError:  # transformers 5 always writes safetensors and dropped the argument
        model.save_pretrained(path)
    assert (Path(path) / "model.safetensors").is_file()


@pytest.fixture(scope="module", params=["pythia-70m", "opt-125m"])
def pair(request, tmp_path_factory):
    """(name, Hugging Face model on the CPU, its saved folder)."""
    torch.manual_seed(0)
    cls = (transformers.GPTNeoXForCausalLM if request.param == "pythia-70m"
           else transformers.OPTForCausalLM)
    hf = cls(hf_config(request.param)).eval()
    path = tmp_path_factory.mktemp(request.param)
    save_pretrained(hf, path)
    return request.param, hf, path


def hf_logits(hf, ids, device):
    with torch.no_grad():
        return hf.to(device)(torch.from_numpy(ids).to(device)).logits.float().cpu().numpy()


def needle_logits(model, ids):
    with ndl.no_grad():
        return model(ids).numpy()


@pytest.mark.parametrize("device", DEVICES)
def test_logits_match(pair, device):
    name, hf, path = pair
    model = from_pretrained(path, device=device)
    expected = PRESETS[name]
    assert model.config.__class__ is expected.__class__
    for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_positions"):
        assert getattr(model.config, field) == getattr(expected, field), field
    if name == "pythia-70m":
        assert model.config.rotary_dim == 16
    assert model.num_parameters() == PARAMETERS[name]
    rng = np.random.default_rng(0)
    for shape in [(2, 128), (1, 7)]:
        ids = rng.integers(0, expected.vocab_size, shape).astype(np.int64)
        diff = np.abs(needle_logits(model, ids) - hf_logits(hf, ids, device)).max()
        print(f"{name} {device} {shape}: max |logit diff| = {diff:.3g}")
        assert diff <= TOLERANCE, (name, device, shape, diff)


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_generation_matches(pair, device):
    name, hf, path = pair
    model = from_pretrained(path, device=device)
    prompt = np.random.default_rng(1).integers(0, PRESETS[name].vocab_size, (1, 16))
    hf = hf.to(device)
    hf.generation_config.eos_token_id = None  # run all 64 steps, as needle does with eos None
    with torch.no_grad():
        want = hf.generate(torch.from_numpy(prompt).to(device),
                           attention_mask=torch.ones(prompt.shape, dtype=torch.long, device=device),
                           max_new_tokens=64, do_sample=False, pad_token_id=0)
    got = generate(model, prompt, 64, eos_token_id=None)
    assert got == want.cpu().numpy().tolist()


def test_needle_export_loads_in_transformers(pair, tmp_path):
    name, hf, path = pair
    model = from_pretrained(path)
    save_hf_checkpoint(model, tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(2).integers(0, PRESETS[name].vocab_size, (1, 32))
    np.testing.assert_allclose(hf_logits(back, ids, "cpu"), hf_logits(hf, ids, "cpu"), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints(pair, tmp_path, dtype):
    name, hf, _ = pair
    half = type(hf)(hf.config)
    half.load_state_dict(hf.state_dict())
    half = half.to(getattr(torch, dtype))
    save_pretrained(half, tmp_path)
    model = from_pretrained(tmp_path)
    reference = half.float().eval()  # the same rounded weights in float32
    ids = np.random.default_rng(3).integers(0, PRESETS[name].vocab_size, (1, 24))
    diff = np.abs(needle_logits(model, ids) - hf_logits(reference, ids, "cpu")).max()
    assert diff <= TOLERANCE, (name, dtype, diff)


@pytest.mark.parametrize("device", DEVICES)
def test_pythia_2_8b_head_dim_matches(device, tmp_path):
    # Pythia-2.8b's attention geometry at a small width: head dim 80 (its rotary part 20), which
    # the CUDA kernels run in 96-wide tiles: the logits of transformers on the same weights.
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(
        vocab_size=512, hidden_size=320, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=1280, hidden_act="gelu", rotary_pct=0.25, rotary_emb_base=10000,
        max_position_embeddings=256, layer_norm_eps=1e-5, use_parallel_residual=True,
        tie_word_embeddings=False, attention_bias=True, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPTNeoXForCausalLM(config).eval()
    save_pretrained(hf, tmp_path)
    model = from_pretrained(tmp_path, device=device)
    assert model.config.hidden_size // model.config.num_heads == 80
    assert model.config.rotary_dim == 20
    ids = np.random.default_rng(4).integers(0, 512, (2, 200)).astype(np.int64)
    diff = np.abs(needle_logits(model, ids) - hf_logits(hf, ids, device)).max()
    assert diff <= TOLERANCE, (device, diff)
