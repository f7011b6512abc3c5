"""Cost of the importance steps against a plain forward+backward step.

On a ~50M-parameter Llama (random weights, built in memory) and batches of 8 x 128 tokens, measures
in one run, interleaved round by round (so a busy machine slows every variant alike):

- ``plain``: ``model(input_ids, labels=labels).loss.backward()`` (a training step without optimizer);
- ``grad``: :func:`perta_hub.importance.accumulate_importance` with ``method="grad"``;
- ``fisher``: the same with ``method="fisher"`` (per-example gradients, micro-batch 1 + hooks: what
  compute-weights uses);
- ``fisher-vmap``: per-example gradients with ``torch.func.vmap(grad(...))`` over the batch, squared
  and summed (the alternative, for the comparison; checked to give the same numbers).

Each variant runs ``--steps`` batches per call, ``--rounds`` times; a step is timed from one batch to the
next inside the call (for the importance engine, the batches come from a generator that stamps the time
each is taken), so a step is forward + backward + hooks. The once-per-pass costs (allocating the fp32
accumulators, the final division, abs and copy) are timed separately and printed. Other processes can
only slow a step down, so the figure reported is the fastest step of each variant (the median is
printed too). Prints one comparison per line with ratios to ``plain``.

    python benchmarks/bench_weights.py                     # CPU: ~50M model
    python benchmarks/bench_weights.py --device cuda --size 1b   # GPU: ~1.2B model, bf16 weights
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

SIZES = {
    # ~51M parameters: 2 x 16384 x 512 embeddings + 10 layers x 3.4M
    "50m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=10, num_attention_heads=8,
                num_key_value_heads=8, vocab_size=16384),
    # ~1.2B parameters, Llama-3.2-1B-like shapes (untied)
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=32768),
}


def build(size: str, device: Any, dtype: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=512, tie_word_embeddings=False, **SIZES[size])
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def make_batches(n: int, batch: int, seq: int, vocab: int, prompt: int, device: Any) -> list[dict[str, Any]]:
    import torch

    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=gen)
        labels = ids.clone()
        labels[:, :prompt] = -100
        out.append({"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                    "labels": labels.to(device)})
    return out


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stamped(batches: list[dict[str, Any]], stamps: list[float], device: Any) -> Any:
    """Yield the batches, recording the time at which each is taken and when the last step ended."""
    for b in batches:
        sync(device)
        stamps.append(time.perf_counter())
        yield b
    sync(device)
    stamps.append(time.perf_counter())


def plain(model: Any, batches: Any, autocast: Any) -> None:
    import torch

    for b in batches:
        with torch.autocast(b["input_ids"].device.type, dtype=autocast, enabled=autocast is not None):
            loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()
        model.zero_grad(set_to_none=True)


def importance(model: Any, batches: Any, autocast: Any, method: str) -> dict[str, Any]:
    from perta_hub.importance.gradients import accumulate_importance

    return accumulate_importance(model, batches, method=method, autocast_dtype=autocast, progress=False).importance


def fisher_vmap(model: Any, batches: list[dict[str, Any]], autocast: Any) -> dict[str, Any]:
    """Per-example gradients with torch.func (every example's full gradient at once), squared and summed."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}

    def loss_one(p: dict[str, Any], ids: Any, labels: Any) -> Any:
        with torch.autocast(ids.device.type, dtype=autocast, enabled=autocast is not None):
            logits = functional_call(model, p, args=(), kwargs={"input_ids": ids[None], "use_cache": False}).logits
        target = labels[1:]
        nll = F.cross_entropy(logits[0, :-1].float(), target, ignore_index=-100, reduction="sum")
        return nll / (target != -100).sum()

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    n = 0
    for b in batches:
        grads = per_example(params, b["input_ids"], b["labels"])
        for name, g in grads.items():
            acc[name].add_(g.float().pow(2).sum(0))
        n += b["input_ids"].shape[0]
        del grads
    return {name: t / n for name, t in acc.items()}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="50m")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per batch [8]")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per example [128]")
    parser.add_argument("--prompt", type=int, default=0,
                        help="leading tokens of each example without a label [0: every position is scored]")
    parser.add_argument("--steps", type=int, default=2, help="batches per call [2]")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds [3]")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--no-vmap", action="store_true", help="skip the torch.func variant")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads [torch's default]; 1 is steadier on a CPU shared with other jobs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    autocast = torch.bfloat16 if device.type == "cuda" else None
    model = build(args.size, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    batches = make_batches(args.steps, args.batch_size, args.seq_len, model.config.vocab_size, args.prompt, device)
    print(f"model: Llama {args.size}, {n_params / 1e6:.1f}M parameters, {dtype} weights on {device}"
          f"{' (bf16 autocast)' if autocast else ''}, torch threads {torch.get_num_threads()}; "
          f"batch {args.batch_size} x {args.seq_len} tokens, {args.steps} batches per call, {args.rounds} rounds")

    variants = {
        "plain fwd+bwd": lambda bs: plain(model, bs, autocast),
        "grad importance": lambda bs: importance(model, bs, autocast, "grad"),
        "fisher importance (micro-batch 1 + hooks)": lambda bs: importance(model, bs, autocast, "fisher"),
    }
    if not args.no_vmap:
        variants["fisher importance (torch.func vmap)"] = lambda bs: fisher_vmap(model, bs, autocast)

    for fn in variants.values():  # warm-up (allocator, kernels)
        fn(batches[:1])
    if not args.no_vmap:
        a = importance(model, batches[:1], autocast, "fisher")
        b = fisher_vmap(model, batches[:1], autocast)
        worst = max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-30)) for n in a)
        print(f"check: fisher hooks vs vmap, largest difference relative to the tensor's max: {worst:.1e}")

    steps: dict[str, list[float]] = {name: [] for name in variants}
    per_pass: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            stamps: list[float] = []
            sync(device)
            start = time.perf_counter()
            fn(stamped(batches, stamps, device))
            sync(device)
            end = time.perf_counter()
            steps[name] += [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=False)]
            per_pass[name].append((stamps[0] - start) + (end - stamps[-1]))
            if device.type == "cuda":
                peaks[name] = torch.cuda.max_memory_allocated(device)

    base = min(steps["plain fwd+bwd"])
    targets = {"grad importance": 1.10, "fisher importance (micro-batch 1 + hooks)": 2.0}
    per_batch_tokens = args.batch_size * args.seq_len
    for name, ts in steps.items():
        t = min(ts)
        line = (f"{name:42s} {args.batch_size / t:7.2f} examples/s {per_batch_tokens / t:8.0f} tokens/s  "
                f"step x{t / base:.3f} of plain fwd+bwd")
        if name in targets:
            line += f" (target <= {targets[name]:.2f}x: {'met' if t / base <= targets[name] else 'MISSED'})"
        line += (f"  [fastest step {t:.3f} s, median {statistics.median(ts):.3f} s; once per pass "
                 f"{min(per_pass[name]):.3f} s]")
        if name in peaks:
            line += f"  peak GPU memory {peaks[name] / 2**30:.2f} GiB"
        print(line, flush=True)


if __name__ == "__main__":
    main()
