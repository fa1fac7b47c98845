"""The apps/ language models on the CPU: parameter counts, logits against float64 NumPy
transcriptions of Hugging Face's GPT-NeoX and OPT forward passes (dense and block-sparse masks),
Hugging Face checkpoint I/O (round trip, pickle refusal, key reports, F16/BF16), KV-cache
generation against full recomputation, sampling options, and gradients."""
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import needle as ndl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from apps.generate import generate, sample_next  # noqa: E402
from apps.models import (PRESETS, GPTNeoXConfig, OPTConfig, build_model, config_from_hf,  # noqa: E402
                         from_pretrained, load_hf_checkpoint, save_hf_checkpoint)
from apps.models_attention import RotaryTables, block_sparse_api  # noqa: E402

HAS_BLOCK_SPARSE = block_sparse_api()[0] is not None
needs_block_sparse = pytest.mark.skipif(not HAS_BLOCK_SPARSE,
                                        reason="this needle build has no BlockSparseLayout")
PATTERNS = ["local", "global", "strided", "mixed", "random"]

SMALL_NEOX = GPTNeoXConfig(vocab_size=96, hidden_size=64, num_layers=2, num_heads=4,
                           intermediate_size=128, max_positions=256)
SMALL_OPT = OPTConfig(vocab_size=96, hidden_size=64, num_layers=2, num_heads=4, ffn_dim=128,
                      max_positions=256)


def randomise(model, seed=0, std=0.2):
    """Every parameter random (biases and LayerNorms too, which the default init leaves at 0/1)."""
    rng = np.random.default_rng(seed)
    state = {name: ndl.tensor(rng.normal(0, std, p.shape).astype(np.float32)
                              + (1.0 if name.endswith("norm.weight") else 0.0))
             for name, p in model.named_parameters()}
    model.load_state_dict(state)
    return model


def params64(model):
    return {n: p.detach().numpy().astype(np.float64) for n, p in model.named_parameters()}


def logits_of(model, ids, **kw):
    with ndl.no_grad():
        return model(ids, **kw).numpy()


# --- float64 references, written from Hugging Face's modeling code ---------------------------

def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def _attend(q, k, v, keep):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    s = np.where(keep, s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    return (s / s.sum(-1, keepdims=True)) @ v


def neox_reference(P, cfg, ids, keep=None):
    B, T = ids.shape
    H, D, rot = cfg.num_heads, cfg.head_dim, cfg.rotary_dim
    keep = np.tril(np.ones((T, T), bool)) if keep is None else keep
    inv_freq = 1.0 / cfg.rotary_base ** (np.arange(0, rot, 2) / rot)
    freqs = np.outer(np.arange(T), inv_freq)
    cos, sin = np.cos(np.concatenate([freqs] * 2, -1)), np.sin(np.concatenate([freqs] * 2, -1))

    def rotate(x):  # apply_rotary_pos_emb on the first `rot` dims, rotate_half convention
        xr, xp = x[..., :rot], x[..., rot:]
        half = np.concatenate([-xr[..., rot // 2:], xr[..., :rot // 2]], -1)
        return np.concatenate([xr * cos + half * sin, xp], -1)

    x = P["gpt_neox.embed_in.weight"][ids]
    for i in range(cfg.num_layers):
        p = lambda n: P[f"gpt_neox.layers.{i}.{n}"]  # noqa: E731
        h = _ln(x, p("input_layernorm.weight"), p("input_layernorm.bias"))
        qkv = (h @ p("attention.query_key_value.weight").T + p("attention.query_key_value.bias"))
        qkv = qkv.reshape(B, T, H, 3 * D)
        q = rotate(qkv[..., :D].transpose(0, 2, 1, 3))
        k = rotate(qkv[..., D:2 * D].transpose(0, 2, 1, 3))
        v = qkv[..., 2 * D:].transpose(0, 2, 1, 3)
        o = _attend(q, k, v, keep).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        a = o @ p("attention.dense.weight").T + p("attention.dense.bias")
        h2 = _ln(x, p("post_attention_layernorm.weight"), p("post_attention_layernorm.bias"))
        u = h2 @ p("mlp.dense_h_to_4h.weight").T + p("mlp.dense_h_to_4h.bias")
        u = 0.5 * u * (1 + _erf(u / math.sqrt(2)))
        m = u @ p("mlp.dense_4h_to_h.weight").T + p("mlp.dense_4h_to_h.bias")
        x = x + a + m
    x = _ln(x, P["gpt_neox.final_layer_norm.weight"], P["gpt_neox.final_layer_norm.bias"])
    return x @ P["embed_out.weight"].T


def opt_reference(P, cfg, ids, keep=None):
    B, T = ids.shape
    H, D = cfg.num_heads, cfg.head_dim
    keep = np.tril(np.ones((T, T), bool)) if keep is None else keep
    pre = "model.decoder."
    x = P[pre + "embed_tokens.weight"][ids] + P[pre + "embed_positions.weight"][np.arange(T) + 2]
    for i in range(cfg.num_layers):
        p = lambda n: P[f"{pre}layers.{i}.{n}"]  # noqa: E731
        h = _ln(x, p("self_attn_layer_norm.weight"), p("self_attn_layer_norm.bias"))
        split = lambda t: t.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # noqa: E731
        q = split(h @ p("self_attn.q_proj.weight").T + p("self_attn.q_proj.bias"))
        k = split(h @ p("self_attn.k_proj.weight").T + p("self_attn.k_proj.bias"))
        v = split(h @ p("self_attn.v_proj.weight").T + p("self_attn.v_proj.bias"))
        o = _attend(q, k, v, keep).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        x = x + o @ p("self_attn.out_proj.weight").T + p("self_attn.out_proj.bias")
        h = _ln(x, p("final_layer_norm.weight"), p("final_layer_norm.bias"))
        u = np.maximum(h @ p("fc1.weight").T + p("fc1.bias"), 0)
        x = x + u @ p("fc2.weight").T + p("fc2.bias")
    x = _ln(x, P[pre + "final_layer_norm.weight"], P[pre + "final_layer_norm.bias"])
    return x @ P[pre + "embed_tokens.weight"].T


REFERENCES = {"gpt_neox": neox_reference, "opt": opt_reference}
CONFIGS = {"gpt_neox": SMALL_NEOX, "opt": SMALL_OPT}


def element_mask(layout, T):
    blocks = layout.to_block_mask()
    b = layout.block_size
    pos = np.arange(T)
    return blocks[pos[:, None] // b, pos[None, :] // b] & (pos[None, :] <= pos[:, None])


# --- sizes and construction -----------------------------------------------------------------------

@pytest.mark.parametrize("name,count", [("pythia-70m", 70_426_624), ("pythia-160m", 162_322_944),
                                        ("opt-125m", 125_239_296)])
def test_parameter_counts(name, count):
    assert build_model(name).num_parameters() == count


# The Pythia suite's published sizes (total parameters, embeddings included) and OPT-125M's.
@pytest.mark.parametrize("name,count", [
    ("pythia-70m", 70_426_624), ("pythia-160m", 162_322_944), ("pythia-410m", 405_334_016),
    ("pythia-1b", 1_011_781_632), ("pythia-1.4b", 1_414_647_808), ("pythia-2.8b", 2_775_208_960),
    ("opt-125m", 125_239_296)])
def test_presets_have_the_published_sizes(name, count):
    assert PRESETS[name].num_parameters() == count


@pytest.mark.parametrize("config", ["pythia-tiny", "opt-tiny", "pythia-70m", SMALL_NEOX, SMALL_OPT,
                                    GPTNeoXConfig(vocab_size=50, hidden_size=48, num_layers=3,
                                                  num_heads=6, intermediate_size=80),
                                    OPTConfig(vocab_size=50, hidden_size=48, num_layers=3,
                                              num_heads=6, ffn_dim=80, max_positions=40)])
def test_config_counts_what_the_model_builds(config):
    expected = (PRESETS[config] if isinstance(config, str) else config).num_parameters()
    assert build_model(config).num_parameters() == expected


def test_cli_prints_architecture_and_count():
    out = subprocess.run([sys.executable, "-m", "apps.models", "pythia-70m"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "parameters: 70,426,624" in out
    assert "(query_key_value): Linear(in_features=512, out_features=1536" in out
    assert "rotary_dim=16" in out


def test_bad_names_raise():
    with pytest.raises(ValueError, match="pythia-70m"):
        build_model("gpt-5")
    with pytest.raises(ValueError, match="local"):
        build_model(SMALL_NEOX, attention="diagonal")
    with pytest.raises(ValueError, match="num_heads"):
        GPTNeoXConfig(hidden_size=100, num_heads=8)
    with pytest.raises(ValueError, match="token ids"):
        build_model(SMALL_NEOX)(np.array([[0, 96]]))


def test_hf_config_spellings():
    v5 = {"model_type": "gpt_neox", "vocab_size": 96, "hidden_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu",
          "rope_parameters": {"rope_type": "default", "rope_theta": 500.0,
                              "partial_rotary_factor": 0.5}}
    cfg = config_from_hf(v5)
    assert (cfg.rotary_dim, cfg.rotary_base) == (8, 500.0)
    assert config_from_hf(SMALL_OPT.to_hf()) == SMALL_OPT
    assert config_from_hf(SMALL_NEOX.to_hf()) == SMALL_NEOX
    with pytest.raises(ValueError, match="hidden_act"):
        config_from_hf({**v5, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="model_type"):
        config_from_hf({"model_type": "llama"})


# --- logits against the references --------------------------------------------------------------------

@pytest.mark.parametrize("family", ["gpt_neox", "opt"])
def test_dense_logits_match_reference(family):
    cfg = CONFIGS[family]
    model = randomise(build_model(cfg))
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 37))
    got = logits_of(model, ids)
    want = REFERENCES[family](params64(model), cfg, ids)
    assert got.shape == (2, 37, cfg.vocab_size)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_rotary_tables_rotate_q_and_k_in_place_of_the_projection():
    # RotaryTables.rotate on q sliced from a (B, T, H, 3, D) projection at positions 6..10 (the
    # tables grow past their length 8): Hugging Face's apply_rotary_pos_emb on the first 4 dims in
    # float32, op by op, to the bit; the other dims and v pass through.
    rot = RotaryTables(head_dim=16, rotary_dim=4, base=10000, length=8)
    x = np.random.default_rng(7).standard_normal((2, 5, 3, 3, 16)).astype(np.float32)
    qkv = ndl.tensor(x, requires_grad=True)
    q = rot.rotate(qkv[:, :, :, 0].permute(0, 2, 1, 3), 6)
    inv_freq = (np.float32(1) / np.float32(10000) ** (np.arange(0, 4, 2).astype(np.float32) / 4))
    ang = np.arange(6, 11, dtype=np.float32)[:, None] * inv_freq[None, :]
    cos = np.cos(ang.astype(np.float64)).astype(np.float32)
    sin = np.sin(ang.astype(np.float64)).astype(np.float32)
    cos, sin = np.concatenate([cos, cos], 1), np.concatenate([sin, sin], 1)
    xq = x[:, :, :, 0].transpose(0, 2, 1, 3)
    half = np.concatenate([-xq[..., 2:4], xq[..., :2]], -1)
    want = np.concatenate([xq[..., :4] * cos + half * sin, xq[..., 4:]], -1)
    np.testing.assert_array_equal(q.detach().numpy(), want)
    q.sum().backward()
    g = qkv.grad.numpy()
    assert np.all(g[:, :, :, 1:] == 0) and np.all(g[:, :, :, 0, 4:] == 1)
    assert not np.allclose(g[:, :, :, 0, :4], 1)


@pytest.mark.parametrize("family", ["gpt_neox", "opt"])
def test_composed_dense_matches_reference(family):
    cfg = CONFIGS[family]
    model = randomise(build_model(cfg, impl="composed"))
    ids = np.random.default_rng(2).integers(0, cfg.vocab_size, (1, 20))
    np.testing.assert_allclose(logits_of(model, ids),
                               REFERENCES[family](params64(model), cfg, ids), atol=2e-4, rtol=1e-4)


@needs_block_sparse
@pytest.mark.parametrize("impl", ["auto", "composed"])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("family", ["gpt_neox", "opt"])
def test_block_sparse_logits_match_masked_reference(family, pattern, impl):
    cfg = CONFIGS[family]
    T = 150  # 10 blocks of 16, the last partial: every pattern drops blocks
    model = randomise(build_model(cfg, attention=pattern, block_size=16, impl=impl))
    ids = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, T))
    keep = element_mask(model.attention_kernel.layout(T), T)
    assert not keep[np.tril_indices(T)].all(), f"{pattern} kept every causal block"
    P = params64(model)
    want = REFERENCES[family](P, cfg, ids, keep)
    np.testing.assert_allclose(logits_of(model, ids), want, atol=2e-4, rtol=1e-4)
    dense = REFERENCES[family](P, cfg, ids)
    assert np.abs(dense - want).max() > 1e-3  # the mask matters at this length


# --- Hugging Face checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["gpt_neox", "opt"])
def test_save_load_round_trip(tmp_path, family):
    cfg = CONFIGS[family]
    model = randomise(build_model(cfg), seed=4)
    save_hf_checkpoint(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == cfg.to_hf()
    names = set(ndl.load(str(tmp_path / "model.safetensors")))
    assert names == {n for n, _ in model.named_parameters()}
    assert ("lm_head.weight" in names) is False
    assert ndl.serialization.load_metadata(str(tmp_path / "model.safetensors")) == {"format": "pt"}
    ids = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 19))
    again = from_pretrained(tmp_path)
    assert again.config == cfg
    np.testing.assert_array_equal(logits_of(again, ids), logits_of(model, ids))
    fresh = build_model(cfg)
    result = load_hf_checkpoint(fresh, tmp_path / "model.safetensors")
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(logits_of(fresh, ids), logits_of(model, ids))


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")
    model = build_model(SMALL_NEOX)
    with pytest.raises(ValueError, match="arbitrary code"):
        load_hf_checkpoint(model, tmp_path)
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        load_hf_checkpoint(model, tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError):
        load_hf_checkpoint(model, tmp_path / "nothing")


def _rewrite(path, edit):
    state = ndl.load(str(path))
    edit(state)
    ndl.save(state, str(path))


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path):
    model = randomise(build_model(SMALL_NEOX))
    save_hf_checkpoint(model, tmp_path)
    file = tmp_path / "model.safetensors"

    def edit(state):
        del state["gpt_neox.layers.1.mlp.dense_4h_to_h.bias"]
        state["gpt_neox.layers.7.extra.weight"] = ndl.zeros(3)
        state["embed_out.weight"] = ndl.zeros(5, 64)

    _rewrite(file, edit)
    fresh = build_model(SMALL_NEOX)
    before = fresh.gpt_neox.embed_in.weight.detach().numpy().copy()
    with pytest.raises(ValueError) as err:
        load_hf_checkpoint(fresh, tmp_path)
    message = str(err.value)
    assert "missing keys: gpt_neox.layers.1.mlp.dense_4h_to_h.bias" in message
    assert "unexpected keys: gpt_neox.layers.7.extra.weight" in message
    assert "embed_out.weight: expected (96, 64), got (5, 64)" in message
    np.testing.assert_array_equal(fresh.gpt_neox.embed_in.weight.detach().numpy(), before)  # untouched
    result = load_hf_checkpoint(fresh, tmp_path, strict=False)
    assert result.missing_keys == ["gpt_neox.layers.1.mlp.dense_4h_to_h.bias"]
    assert "gpt_neox.layers.7.extra.weight" in result.unexpected_keys
    np.testing.assert_array_equal(fresh.gpt_neox.embed_in.weight.detach().numpy(),
                                  model.gpt_neox.embed_in.weight.detach().numpy())


def test_buffers_are_ignored_and_opt_prefix_is_optional(tmp_path):
    neox = randomise(build_model(SMALL_NEOX))
    save_hf_checkpoint(neox, tmp_path / "neox")
    buffers = ["gpt_neox.layers.0.attention.bias", "gpt_neox.layers.0.attention.masked_bias",
               "gpt_neox.layers.1.attention.rotary_emb.inv_freq"]
    _rewrite(tmp_path / "neox" / "model.safetensors",
             lambda s: s.update({b: ndl.ones(2) for b in buffers}))
    result = load_hf_checkpoint(build_model(SMALL_NEOX), tmp_path / "neox")
    assert sorted(result.ignored_keys) == sorted(buffers)

    opt = randomise(build_model(SMALL_OPT))
    save_hf_checkpoint(opt, tmp_path / "opt")
    file = tmp_path / "opt" / "model.safetensors"

    def strip_prefix_add_head(state):
        for name in list(state):
            state[name[len("model."):]] = state.pop(name)
        state["lm_head.weight"] = state["decoder.embed_tokens.weight"]

    _rewrite(file, strip_prefix_add_head)
    fresh = build_model(SMALL_OPT)
    load_hf_checkpoint(fresh, file)
    ids = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(logits_of(fresh, ids), logits_of(opt, ids))
    _rewrite(file, lambda s: s.update({"lm_head.weight": ndl.zeros(96, 64)}))
    with pytest.raises(ValueError, match="ties them"):
        load_hf_checkpoint(build_model(SMALL_OPT), file)


def _write_safetensors(path, arrays):
    """A safetensors file by hand, so F16 and BF16 entries can be written (needle has no F16)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, data) in arrays.items():
        raw = data.tobytes()
        header[name] = {"dtype": dtype, "shape": list(data.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_f16_and_bf16_weights_become_float32(tmp_path):
    model = build_model(SMALL_OPT)
    rng = np.random.default_rng(6)
    arrays, expected = {}, {}
    for i, (name, p) in enumerate(model.named_parameters()):
        x = rng.normal(0, 0.5, p.shape).astype(np.float32)
        if i % 2:
            half = x.astype(np.float16)
            arrays[name], expected[name] = ("F16", half), half.astype(np.float32)
        else:
            bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 by truncation
            arrays[name] = ("BF16", bits)
            expected[name] = (bits.astype(np.uint32) << 16).view(np.float32)
    _write_safetensors(tmp_path / "model.safetensors", arrays)
    load_hf_checkpoint(model, tmp_path)
    for name, p in model.named_parameters():
        assert p.dtype == ndl.float32
        np.testing.assert_array_equal(p.detach().numpy(), expected[name], err_msg=name)


# --- generation ------------------------------------------------------------------------------------------

def full_recompute_greedy(model, prompt, steps):
    seq, last_logits = list(prompt), []
    for _ in range(steps):
        logits = logits_of(model, np.array([seq]))[0, -1]
        last_logits.append(logits)
        seq.append(int(np.argmax(logits)))
    return seq, np.array(last_logits)


def cached_logits(model, prompt, steps):
    cache = model.make_kv_cache(len(prompt) + steps)
    seq, out = list(prompt), []
    with ndl.no_grad():
        logits = model(np.array([prompt]), kv_cache=cache, logits_to_keep=1)
        for _ in range(steps):
            out.append(logits.numpy()[0, -1])
            seq.append(int(np.argmax(out[-1])))
            logits = model(np.array([[seq[-1]]]), kv_cache=cache)
    return seq, np.array(out)


@pytest.mark.parametrize("attention", ["dense"] + PATTERNS)
@pytest.mark.parametrize("family", ["gpt_neox", "opt"])
def test_kv_cache_generation_matches_full_recompute(family, attention):
    if attention != "dense" and not HAS_BLOCK_SPARSE:
        pytest.skip("this needle build has no BlockSparseLayout")
    cfg = CONFIGS[family]
    model = randomise(build_model(cfg, attention=attention, block_size=16), seed=7, std=0.3)
    prompt = list(np.random.default_rng(8).integers(0, cfg.vocab_size, 21))
    steps = 44  # crosses key blocks 2, 3 and 4
    want_seq, want_logits = full_recompute_greedy(model, prompt, steps)
    got_seq, got_logits = cached_logits(model, prompt, steps)
    np.testing.assert_allclose(got_logits, want_logits, atol=1e-4, rtol=1e-4)
    assert got_seq == want_seq
    assert generate(model, prompt, steps, eos_token_id=None) == want_seq


def _rel(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("attention", ["dense", "mixed"])
@pytest.mark.parametrize("family", ["gpt_neox", "opt"])
def test_autocast_logits_and_kv_cache(family, attention):
    """Under bfloat16 autocast: the logits are bfloat16 and within bfloat16 rounding of float32's,
    and decoding token by token with the KV cache (which then holds bfloat16 keys and values)
    gives the full forward's logits."""
    if attention != "dense" and not HAS_BLOCK_SPARSE:
        pytest.skip("this needle build has no BlockSparseLayout")
    cfg = CONFIGS[family]
    model = randomise(build_model(cfg, attention=attention, block_size=16), seed=7, std=0.3)
    ids = np.random.default_rng(9).integers(0, cfg.vocab_size, (1, 40))
    want = logits_of(model, ids)
    prompt = 21
    with ndl.no_grad(), ndl.autocast("cpu"):
        full = model(ids)
        assert full.dtype == ndl.bfloat16
        full = full.to(ndl.float32).numpy()
        cache = model.make_kv_cache(ids.shape[1])
        steps = [model(ids[:, :prompt], kv_cache=cache)]
        steps += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(prompt, ids.shape[1])]
        cached = np.concatenate([s.to(ndl.float32).numpy() for s in steps], axis=1)
    assert _rel(full, want) < 3e-2, _rel(full, want)
    assert _rel(cached, full) < 2e-2, _rel(cached, full)


def test_kv_cache_checks_capacity_and_batch():
    model = build_model(SMALL_NEOX)
    cache = model.make_kv_cache(4)
    with ndl.no_grad():
        model(np.zeros((2, 3), np.int64), kv_cache=cache)
        with pytest.raises(ValueError, match="capacity"):
            model(np.zeros((2, 2), np.int64), kv_cache=cache)
        with pytest.raises(ValueError, match="batch size 2"):
            model(np.zeros((1, 1), np.int64), kv_cache=cache)
        assert cache.length == 3
        model(np.zeros((2, 1), np.int64), kv_cache=cache)
        assert cache.length == 4
    with pytest.raises(ValueError, match="learned positions"):
        build_model(SMALL_OPT).make_kv_cache(257)
    with pytest.raises(ValueError, match="learned positions"):
        build_model(SMALL_OPT)(np.zeros((1, 257), np.int64))


def test_generate_batches_eos_and_sampling():
    model = randomise(build_model(SMALL_NEOX), seed=9, std=0.3)
    rng = np.random.default_rng(10)
    prompts = [list(rng.integers(0, 96, n)) for n in (5, 9, 5)]
    batched = generate(model, prompts, 12, eos_token_id=None)
    assert batched == [generate(model, p, 12, eos_token_id=None) for p in prompts]
    # Stop at the first greedy token treated as end-of-sequence.
    eos = batched[0][5 + 3]
    stopped = generate(model, prompts[0], 12, eos_token_id=eos)
    assert stopped[-1] == eos and len(stopped) <= 5 + 4
    # top_k=1 sampling is greedy; a seed makes sampling repeatable.
    assert generate(model, prompts[1], 12, temperature=1.3, top_k=1, seed=3,
                    eos_token_id=None) == batched[1]
    a = generate(model, prompts, 12, temperature=1.0, top_p=0.9, seed=11, eos_token_id=None)
    assert a == generate(model, prompts, 12, temperature=1.0, top_p=0.9, seed=11,
                         eos_token_id=None)
    assert a != batched
    assert generate(model, prompts[0], 0) == prompts[0]
    for bad in ({"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            generate(model, prompts[0], 4, **bad)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompts[0], -1)
    with pytest.raises(ValueError, match="prompt 1"):
        generate(model, [[1, 2], []], 4)


def test_sample_next_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    draws = lambda **kw: {int(sample_next(logits, 1.0, rng=rng, **kw)[0])  # noqa: E731
                          for _ in range(400)}
    assert draws(top_k=2, top_p=None) == {0, 1}
    # Away from the boundary 0.5 + 0.3 = 0.8: there the sum of exp(log(p)) lands an ulp either
    # side of 0.8 depending on NumPy's build (it kept token 2 on the GPU machine's NumPy).
    assert draws(top_k=None, top_p=0.75) == {0, 1}     # 0.5 < 0.75 <= 0.5 + 0.3
    assert draws(top_k=None, top_p=0.81) == {0, 1, 2}
    assert draws(top_k=None, top_p=0.4) == {0}
    assert draws(top_k=None, top_p=None) == {0, 1, 2, 3}


# --- training ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pythia-tiny", "opt-tiny"])
def test_tiny_preset_forward_backward(name):
    model = build_model(name)
    ids = np.random.default_rng(12).integers(0, model.config.vocab_size, (2, 33))
    logits = model(ids[:, :-1])
    assert logits.shape == (2, 32, model.config.vocab_size)
    loss = ndl.nn.functional.cross_entropy(logits.reshape(64, -1),
                                           ndl.tensor(ids[:, 1:].reshape(-1), dtype=ndl.int64))
    # A fresh model predicts close to uniformly.
    assert abs(loss.item() - math.log(model.config.vocab_size)) < 0.5
    loss.backward()
    for pname, p in model.named_parameters():
        g = p.grad
        assert g is not None and g.shape == p.shape, pname
        assert np.isfinite(g.numpy()).all(), pname
    assert np.abs(model._input_embedding().weight.grad.numpy()).max() > 0


@pytest.mark.parametrize("attention", ["dense", "local"])
@pytest.mark.parametrize("family", ["gpt_neox", "opt"])
def test_gradients_match_finite_differences(family, attention):
    if attention != "dense" and not HAS_BLOCK_SPARSE:
        pytest.skip("this needle build has no BlockSparseLayout")
    cfg = CONFIGS[family]
    model = randomise(build_model(cfg, attention=attention, block_size=16), seed=13, std=0.3)
    model.to(dtype=ndl.float64)
    ids = np.random.default_rng(14).integers(0, cfg.vocab_size, (2, 40))
    targets = ndl.tensor(ids[:, 1:].reshape(-1), dtype=ndl.int64)

    def loss_fn():
        logits = model(ids[:, :-1])
        return ndl.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets)

    model.zero_grad()
    loss_fn().backward()
    params = dict(model.named_parameters())
    rng = np.random.default_rng(15)
    names = [n for n in params if "layers.1" in n or "embed" in n]
    for name in names[::3]:
        p = params[name]
        flat = p.detach().numpy().reshape(-1).copy()  # numpy() shares the memory
        i = int(rng.integers(flat.size))
        analytic = p.grad.numpy().reshape(-1)[i]
        eps, values = 1e-6, []
        for sign in (1, -1):
            trial = flat.copy()
            trial[i] += sign * eps
            model.load_state_dict({name: ndl.tensor(trial.reshape(p.shape), dtype=ndl.float64)},
                                  strict=False)
            with ndl.no_grad():
                values.append(loss_fn().item())
        model.load_state_dict({name: ndl.tensor(flat.reshape(p.shape), dtype=ndl.float64)},
                              strict=False)
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(numeric - analytic) <= 1e-6 + 1e-4 * abs(numeric), (name, numeric, analytic)


def test_a_few_steps_reduce_the_loss():
    model = build_model(SMALL_NEOX)
    ids = np.random.default_rng(16).integers(0, 96, (4, 17))
    targets = ndl.tensor(ids[:, 1:].reshape(-1), dtype=ndl.int64)
    opt = ndl.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = ndl.nn.functional.cross_entropy(model(ids[:, :-1]).reshape(-1, 96), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("extra, message", [
    (["--max-new-tokens", "-3"], "expected max_new_tokens >= 0, got -3"),
    (["--top-k", "0"], "expected top_k None or >= 1, got 0"),
    (["--top-p", "2"], "expected top_p None or in (0, 1], got 2.0"),
    (["--checkpoint", "/nonexistent/model"], "--checkpoint /nonexistent/model does not exist"),
    (["--attention", "sliding"], "invalid choice: 'sliding'"),
])
def test_generate_cli_usage_errors(extra, message, capsys):
    from apps.generate import main
    with pytest.raises(SystemExit) as e:
        main(["--model", "pythia-tiny", "--prompt", "hi", *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err
