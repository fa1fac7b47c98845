"""apps.prepare_data on a fixture corpus (tiny vocabulary, --input) and needle.data.TokenDataLoader."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

import needle
from apps import prepare_data

TokenDataLoader = needle.data.TokenDataLoader
Tokenizer = needle.data.Tokenizer
ROOT = Path(__file__).resolve().parents[2]


def as_numpy(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def write_tiny_vocab(d):
    b2u = {}
    n = 0
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    for b in range(256):
        b2u[b] = chr(b) if b in printable else chr(256 + n)
        n += b not in printable
    vocab = {b2u[b]: b for b in range(256)}
    vocab.update({"th": 256, "Ġth": 257, "Ġthe": 258, "<|endoftext|>": 259})
    (d / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "vocab.bpe").write_text("#version: 0.2\nt h\nĠ th\nĠth e\n", encoding="utf-8")
    return d / "encoder.json", d / "vocab.bpe"


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "über", "naïve", "42", "—", "\n"]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randrange(5, 60))) + f" doc {i}." for i in range(150)]
    path = tmp_path / "corpus.txt"
    path.write_text("<|endoftext|>".join(docs), encoding="utf-8")
    encoder, bpe = write_tiny_vocab(tmp_path)
    args = ["--input", str(path), "--name", "fixture", "--data-dir", str(tmp_path / "data"),
            "--encoder-json", str(encoder), "--vocab-bpe", str(bpe)]
    return tmp_path, docs, args


def test_prepare_data_splits_documents_and_writes_meta(corpus, capsys):
    tmp_path, docs, args = corpus
    prepare_data.main(args)
    out = tmp_path / "data" / "fixture"
    meta = json.loads((out / "meta.json").read_text())
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert meta["tokens"] == {"train": train.size, "val": val.size}
    assert meta["documents"] == {"train": 148, "val": 2}  # round(150 * 1%) = 2
    assert meta["vocab_size"] == 260 and meta["eot_token"] == 259 and meta["dtype"] == "uint16"
    assert f"train {train.size:,} tokens" in capsys.readouterr().out

    tok = Tokenizer.from_gpt2(*(str(tmp_path / f) for f in ("encoder.json", "vocab.bpe")))
    decoded = tok.decode(np.concatenate([train, val]).tolist()).split("<|endoftext|>")
    assert decoded[-1] == ""  # every document ends with <|endoftext|>
    assert sorted(decoded[:-1]) == sorted(docs)
    assert tok.decode(val.tolist()).split("<|endoftext|>")[:-1] == [docs[i] for i in meta["val_documents"]]
    assert val.size + train.size == sum(len(tok.encode(d)) + 1 for d in docs)


def test_prepare_data_is_idempotent_and_seeded(corpus, capsys):
    tmp_path, docs, args = corpus
    prepare_data.main(args)
    out = tmp_path / "data" / "fixture"
    stamp = (out / "train.bin").stat().st_mtime_ns
    first_val = json.loads((out / "meta.json").read_text())["val_documents"]
    capsys.readouterr()
    prepare_data.main(args)
    assert "up to date" in capsys.readouterr().out
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    prepare_data.main(args + ["--seed", "7"])
    assert "up to date" not in capsys.readouterr().out
    assert json.loads((out / "meta.json").read_text())["val_documents"] != first_val
    assert not list(out.glob("*.tmp"))


def test_prepare_data_rejects_a_single_document(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("just one document", encoding="utf-8")
    encoder, bpe = write_tiny_vocab(tmp_path)
    with pytest.raises(ValueError, match="at least 2 documents"):
        prepare_data.main(["--input", str(path), "--name", "one", "--data-dir", str(tmp_path / "data"),
                           "--encoder-json", str(encoder), "--vocab-bpe", str(bpe)])


@pytest.mark.parametrize("extra, message", [
    (["--val-fraction", "0"], "--val-fraction must be in (0, 1), got 0.0"),
    (["--val-fraction", "nan"], "--val-fraction must be in (0, 1), got nan"),
    (["--threads", "-2"], "--threads must be >= 0 (0: all cores), got -2"),
])
def test_prepare_data_bad_options_are_usage_errors(corpus, capsys, extra, message):
    # They were tracebacks from split_documents and the tokenizer, after the corpus was read.
    tmp_path, _, args = corpus
    with pytest.raises(SystemExit) as e:
        prepare_data.main(args + extra)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "data" / "fixture").exists()


def test_split_documents_is_seeded():
    a_train, a_val = prepare_data.split_documents(1000, 0.01, seed=3)
    b_train, b_val = prepare_data.split_documents(1000, 0.01, seed=3)
    assert a_val.tolist() == b_val.tolist() and len(a_val) == 10
    assert sorted(a_train.tolist() + a_val.tolist()) == list(range(1000))
    assert prepare_data.split_documents(1000, 0.01, seed=4)[1].tolist() != a_val.tolist()


def test_brown_tags_are_stripped_back_to_prose():
    tagged = ("\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc it's/pps+bez fine/jj ./.\n"
              "\tNext/ap sentence/nn (/( aside/rb )/) ?/.\n\n\n\tNew/jj paragraph/nn by/in Ed/np Jr./np ./.\n")
    assert prepare_data.brown_to_text(tagged) == (
        'The jury said "no evidence", and it\'s fine. Next sentence (aside)?\n\nNew paragraph by Ed Jr.')


# --- loader -------------------------------------------------------------------------------------------
@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(10_000, dtype=np.uint16).tofile(path)  # token i at position i: windows are checkable
    return path


def test_random_batches_shapes_and_shift(token_file):
    loader = TokenDataLoader(token_file, batch_size=4, seq_len=16, seed=0)
    for _ in range(5):
        x, y = (as_numpy(t) for t in next(loader))
        assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == np.int64
        assert (y[:, :-1] == x[:, 1:]).all() and (y[:, -1] == x[:, -1] + 1).all()
        assert (np.diff(x, axis=1) == 1).all()  # contiguous windows of the file
        assert x.min() >= 0 and y.max() <= 9_999


def test_random_batches_are_seeded_and_resumable(token_file):
    def draw(loader, n):
        return [as_numpy(next(loader)[0]) for _ in range(n)]

    a = draw(TokenDataLoader(token_file, 8, 32, seed=5), 6)
    b = draw(TokenDataLoader(token_file, 8, 32, seed=5), 6)
    c = draw(TokenDataLoader(token_file, 8, 32, seed=6), 6)
    assert all((p == q).all() for p, q in zip(a, b))
    assert not all((p == q).all() for p, q in zip(a, c))

    loader = TokenDataLoader(token_file, 8, 32, seed=5)
    draw(loader, 3)
    state = json.loads(json.dumps(loader.state_dict()))  # survives a JSON round trip
    resumed = TokenDataLoader(token_file, 8, 32, seed=123)
    resumed.load_state_dict(state)
    assert all((p == q).all() for p, q in zip(draw(resumed, 3), a[3:]))


def test_sequential_visits_each_window_once(token_file):
    loader = TokenDataLoader(token_file, batch_size=7, seq_len=100, sequential=True)
    batches = [tuple(as_numpy(t) for t in b) for b in loader]
    assert len(batches) == len(loader) == 15  # 99 windows of 100 tokens in 10,000 (one kept for the target)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape == (99, 100) and batches[-1][0].shape == (1, 100)
    assert (x.reshape(-1) == np.arange(9900)).all() and (y.reshape(-1) == np.arange(1, 9901)).all()
    assert sum(1 for _ in loader) == 15  # a new loop starts over

    loader = TokenDataLoader(token_file, batch_size=7, seq_len=100, sequential=True)
    next(loader), next(loader)
    resumed = TokenDataLoader(token_file, batch_size=7, seq_len=100, sequential=True)
    resumed.load_state_dict(loader.state_dict())
    assert (as_numpy(next(resumed)[0]) == as_numpy(next(loader)[0])).all()


def test_loader_errors(tmp_path, token_file):
    with pytest.raises(ValueError, match="does not exist"):
        TokenDataLoader(tmp_path / "missing.bin", 2, 8)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="even size"):
        TokenDataLoader(odd, 2, 8)
    short = tmp_path / "short.bin"
    np.zeros(1, dtype=np.uint16).tofile(short)
    with pytest.raises(ValueError, match="at least 2"):
        TokenDataLoader(short, 2, 1)
    with pytest.raises(ValueError, match="at most 9999"):
        TokenDataLoader(token_file, 2, 10_000)
    assert TokenDataLoader(token_file, 2, 9_999).seq_len == 9_999
    with pytest.raises(ValueError, match="batch_size"):
        TokenDataLoader(token_file, 0, 8)
    with pytest.raises(TypeError):
        len(TokenDataLoader(token_file, 2, 8))
    with pytest.raises(ValueError, match="sequential"):
        TokenDataLoader(token_file, 2, 8).load_state_dict(TokenDataLoader(token_file, 2, 8, sequential=True).state_dict())


@pytest.mark.skipif(not (ROOT / "data" / "sotu" / "meta.json").exists(), reason="sotu not prepared")
def test_prepared_sotu_is_consistent():
    meta = json.loads((ROOT / "data" / "sotu" / "meta.json").read_text())
    for split in ("train", "val"):
        path = ROOT / "data" / "sotu" / f"{split}.bin"
        assert path.stat().st_size == 2 * meta["tokens"][split]
    x, y = next(TokenDataLoader(ROOT / "data" / "sotu" / "val.bin", 2, 64))
    assert as_numpy(x).max() < meta["vocab_size"]
