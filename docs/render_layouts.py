"""Renders the block-sparse layout pictures of docs/block_sparse.md and prints each pattern's
density at L = 2048, b = 64 (the table in that file).

    apt-get install python3-matplotlib     # Debian's package
    PYTHONPATH=python python3 docs/render_layouts.py
"""
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from needle._C import attention  # noqa: E402

Layout = attention.BlockSparseLayout
HERE = os.path.dirname(os.path.abspath(__file__))


def patterns(L, b, causal):
    return [
        ("dense", Layout.dense(L, b, causal=causal)),
        ("local(window=1)", Layout.local(L, b, window=1, causal=causal)),
        ("global_(global_blocks=1)", Layout.global_(L, b, global_blocks=1, causal=causal)),
        ("strided(stride=4)", Layout.strided(L, b, stride=4, causal=causal)),
        ("mixed(window=3)", Layout.mixed(L, b, window=3, global_blocks=1, stride=4, causal=causal)),
        ("random(blocks_per_row=3)", Layout.random(L, b, blocks_per_row=3, seed=0, causal=causal)),
    ]


def render(path, L, b, causal):
    layouts = patterns(L, b, causal)
    fig, axes = plt.subplots(1, len(layouts), figsize=(2.3 * len(layouts), 2.8), dpi=80)
    for ax, (name, layout) in zip(axes, layouts):
        ax.imshow(layout.to_block_mask(), cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
        ax.set_title(f"{name}\ndensity {layout.density():.3f}", fontsize=8)
        ax.set_xlabel("key block", fontsize=7)
        ax.set_ylabel("query block", fontsize=7)
        ax.tick_params(labelsize=6)
    kind = "causal" if causal else "non-causal"
    fig.suptitle(f"{kind}, L = {L}, block_size = {b} ({layouts[0][1].num_q_blocks} x "
                 f"{layouts[0][1].num_k_blocks} blocks); dark = kept", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path) // 1024} KB)")


def main():
    render(os.path.join(HERE, "block_sparse_causal.png"), 1024, 64, True)
    render(os.path.join(HERE, "block_sparse_noncausal.png"), 1024, 64, False)
    print("\nDensity at L = 2048, block_size = 64 (kept / dense blocks of the same causality):")
    print(f"| {'pattern':<26} | {'causal':>7} | {'non-causal':>10} |")
    print(f"|{'-' * 28}|{'-' * 9}|{'-' * 12}|")
    for (name, causal), (_, noncausal) in zip(patterns(2048, 64, True), patterns(2048, 64, False)):
        print(f"| {name:<26} | {causal.density():7.3f} | {noncausal.density():10.3f} |")


if __name__ == "__main__":
    main()
