"""Generation and forward latency of needle's Pythia-70M against Hugging Face transformers in the
same process, on the same weights (transformers builds a random model from the pythia-70m config,
saves it as safetensors, needle loads it; nothing is downloaded).

    PYTHONPATH=python python3 bench/bench_generate.py --device cuda --json gen.json

Generation: batch 1, a random prompt of --prompt-len tokens, --new-tokens greedy tokens, end to
end (prefill + decode) divided by the new tokens; both sides run every step (no early stop).
Forward: one sequence of each --lengths, full logits. float32 with TF32 off on both sides.
Medians of --repeats timed runs after a warm-up. Prints a table and writes JSON.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import needle as ndl  # noqa: E402

from apps.generate import generate  # noqa: E402
from apps.models import PRESETS, from_pretrained  # noqa: E402
from apps.models_attention import _FUSED_BY_DEVICE  # noqa: E402


def median_seconds(fn, sync, repeats):
    fn()  # warm-up: allocator pools, cuBLAS handles, layout and rotary caches
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--lengths", default="128,256,512,1024,2048")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--impls", default="auto,composed",
                        help="needle attention impls to time (auto uses fused kernels if built)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ndl.set_float32_matmul_precision("highest")
    on_cuda = args.device.startswith("cuda")

    def torch_sync():
        if on_cuda:
            torch.cuda.synchronize()

    def needle_sync():
        if on_cuda:
            ndl.cuda.synchronize()

    cfg = PRESETS["pythia-70m"]
    torch.manual_seed(0)
    hf_cfg = transformers.GPTNeoXConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, hidden_act="gelu", rotary_pct=cfg.rotary_pct,
        rotary_emb_base=cfg.rotary_base, max_position_embeddings=cfg.max_positions,
        use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).eval()
    tmp = tempfile.TemporaryDirectory()
    try:
        hf.save_pretrained(tmp.name, safe_serialization=True)
    except TypeError:
        hf.save_pretrained(tmp.name)
    hf = hf.to(args.device)
    hf.generation_config.eos_token_id = None
    models = {impl: from_pretrained(tmp.name, device=args.device, impl=impl).eval()
              for impl in args.impls.split(",")}

    rng = np.random.default_rng(0)
    prompt = rng.integers(0, cfg.vocab_size, (1, args.prompt_len)).astype(np.int64)
    prompt_t = torch.from_numpy(prompt).to(args.device)
    mask_t = torch.ones_like(prompt_t)
    results = {"device": args.device, "model": "pythia-70m", "prompt_len": args.prompt_len,
               "new_tokens": args.new_tokens, "repeats": args.repeats,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "gpu": torch.cuda.get_device_name() if on_cuda else None,
               "generation": {}, "forward": []}

    def hf_generate():
        with torch.no_grad():
            return hf.generate(prompt_t, attention_mask=mask_t, max_new_tokens=args.new_tokens,
                               do_sample=False, pad_token_id=0)

    hf_tokens = hf_generate().cpu().numpy().tolist()
    t = median_seconds(hf_generate, torch_sync, args.repeats)
    results["generation"]["transformers"] = {"ms_per_token": 1000 * t / args.new_tokens}
    for impl, model in models.items():
        out = generate(model, prompt, args.new_tokens, eos_token_id=None)
        t = median_seconds(lambda: generate(model, prompt, args.new_tokens, eos_token_id=None),
                           needle_sync, args.repeats)
        results["generation"][f"needle[{impl}]"] = {
            "ms_per_token": 1000 * t / args.new_tokens, "tokens_match_transformers": out == hf_tokens,
            "fused_attention": _FUSED_BY_DEVICE.get(str(model.device), False) if impl == "auto" else False}

    for length in [int(x) for x in args.lengths.split(",")]:
        ids = rng.integers(0, cfg.vocab_size, (1, length)).astype(np.int64)
        ids_t = torch.from_numpy(ids).to(args.device)
        row = {"length": length}
        with torch.no_grad():
            want = hf(ids_t).logits
            row["transformers_ms"] = 1000 * median_seconds(lambda: hf(ids_t), torch_sync,
                                                           args.repeats)
        for impl, model in models.items():
            with ndl.no_grad():
                ids_n = ndl.tensor(ids, dtype=ndl.int64, device=args.device)
                got = model(ids_n)
                row[f"needle[{impl}]_ms"] = 1000 * median_seconds(lambda: model(ids_n),
                                                                  needle_sync, args.repeats)
                row[f"needle[{impl}]_max_diff"] = float(np.abs(
                    got.numpy() - want.float().cpu().numpy()).max())
            del got
        del want
        results["forward"].append(row)

    print(f"pythia-70m on {results['gpu'] or args.device}, float32 (TF32 off), torch "
          f"{torch.__version__}, transformers {transformers.__version__}")
    print(f"\ngeneration: batch 1, prompt {args.prompt_len}, {args.new_tokens} new tokens "
          "(end to end / new tokens)")
    base = results["generation"]["transformers"]["ms_per_token"]
    print(f"{'implementation':<22}{'ms/token':>10}{'vs transformers':>18}{'same tokens':>13}")
    for name, r in results["generation"].items():
        same = r.get("tokens_match_transformers", "")
        print(f"{name:<22}{r['ms_per_token']:>10.3f}{base / r['ms_per_token']:>17.2f}x"
              f"{str(same):>13}")
    print("\nforward latency, one sequence, full logits (ms)")
    impl_names = list(models)
    header = f"{'length':>7}{'transformers':>14}" + "".join(f"{'needle[' + i + ']':>20}"
                                                          for i in impl_names)
    print(header + f"{'max |diff|':>12}")
    for row in results["forward"]:
        line = f"{row['length']:>7}{row['transformers_ms']:>14.3f}"
        for impl in impl_names:
            ms = row[f"needle[{impl}]_ms"]
            line += f"{ms:>11.3f} ({row['transformers_ms'] / ms:4.2f}x)"
        diffs = max(row[f"needle[{i}]_max_diff"] for i in impl_names)
        print(line + f"{diffs:>12.2e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
