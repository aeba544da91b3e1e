"""Loss by position past the training length: does a model extrapolate (ALiBi) or not?

    python -m training.eval.extrapolation CHECKPOINT_OR_FOLDER --data DATASET --lengths 128 256 512

For each length L, windows of L tokens are cut from one split of a token dataset (its samples
concatenated in stored order) and each window is scored as one causal sequence, with no document
mask: the loss at position p is the mean, over windows, of predicting token p + 1 from tokens 0..p.
The training length (default: the model's max_seq_len) is marked in the table and the plot.
Writes extrapolation.json (every length's loss at every position), extrapolation.png (loss by
position, a line per length) and prints a table: mean loss per bucket of positions, per length.

Learned position embeddings have no row past max_seq_len: such lengths are refused, as is SDPA
where its ALiBi bias would not fit the device (use --attn-impl flex).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shards import MDSReader
from shards.mds import TOKENS_COLUMN
from training.data.resolve import device_memory
from training.data.sources import resolve_source
from training.model import MPT, MPTConfig, check_sdpa_fits
from training.weights.inference import load_model


def check_lengths(config: MPTConfig, lengths: list[int]) -> None:
    """Refuse lengths the model cannot run at all: learned positions end at max_seq_len."""
    if min(lengths) < 2:
        raise ValueError(f"--lengths must be at least 2 tokens (one prediction), got {lengths}")
    past = [length for length in lengths if length > config.max_seq_len]
    if config.position == "learned" and past:
        raise ValueError(
            f"the model has learned position embeddings for max_seq_len={config.max_seq_len} positions; lengths "
            f"{past} go past them (only ALiBi and RoPE models run past their training length)"
        )


def token_windows(url: str, length: int, count: int) -> torch.Tensor:
    """Up to ``count`` windows [n, length] of the MDS split at ``url``, its samples concatenated in stored order."""
    with MDSReader(url) as reader:
        if TOKENS_COLUMN not in reader.columns:
            raise ValueError(f"{url} has no {TOKENS_COLUMN!r} column (columns: {sorted(reader.columns)})")
        pieces, have = [], 0
        for index in range(len(reader)):
            if have >= length * count:
                break
            pieces.append(np.asarray(reader[index][TOKENS_COLUMN]))
            have += len(pieces[-1])
    stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    n = min(count, len(stream) // length)
    if n == 0:
        raise ValueError(f"{url} holds {len(stream)} tokens, fewer than one window of {length}")
    return torch.from_numpy(stream[:n * length].astype(np.int64)).view(n, length)


@torch.no_grad()
def loss_by_position(model: MPT, windows: torch.Tensor, batch_size: int) -> np.ndarray:
    """Mean next-token loss at each position 0..L-2 of the windows [n, L] (float64, nats)."""
    device = next(model.parameters()).device
    total = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    for batch in windows.split(batch_size):
        batch = batch.to(device)
        logits = model(batch[:, :-1])
        losses = F.cross_entropy(logits.float().transpose(1, 2), batch[:, 1:], reduction="none")  # [b, L - 1]
        total += losses.double().sum(0).cpu()
    return (total / len(windows)).numpy()


def bucket_table(losses: dict[int, np.ndarray], bucket: int) -> list[dict]:
    """Rows {start, end, loss: {length: mean loss over positions [start, end)}} over every length that reaches."""
    longest = max(len(curve) for curve in losses.values())
    rows = []
    for start in range(0, longest, bucket):
        end = start + bucket
        reached = {length: float(curve[start:end].mean()) for length, curve in losses.items() if len(curve) > start}
        rows.append({"start": start, "end": end, "loss": reached})
    return rows


def format_table(rows: list[dict], lengths: list[int], train_len: int) -> str:
    header = f"{'positions':>15} " + " ".join(f"{f'L={length}':>9}" for length in lengths)
    lines = [header]
    for row in rows:
        mark = "  past training" if row["start"] >= train_len else ""
        cells = " ".join(f"{row['loss'][length]:9.4f}" if length in row["loss"] else f"{'':>9}" for length in lengths)
        lines.append(f"{row['start']:>7}-{row['end']:<7} {cells}{mark}")
    return "\n".join(lines)


def plot(losses: dict[int, np.ndarray], train_len: int, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    step = max(1, max(map(len, losses.values())) // 64)  # a mean per group of positions keeps the lines readable
    for length, curve in sorted(losses.items(), reverse=True):
        groups = len(curve) // step
        means = curve[:groups * step].reshape(groups, step).mean(1)
        ax.plot(np.arange(groups) * step + (step - 1) / 2, means, label=f"windows of {length}")
    ax.axvline(train_len, color="gray", linestyle="--", label=f"training length {train_len}")
    ax.set_xlabel(f"position in the window (mean of every {step})" if step > 1 else "position in the window")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_extrapolation(model: MPT, url: str, lengths: list[int], windows: int = 32,
                           batch_size: int = 4) -> dict[int, tuple[int, np.ndarray]]:
    """length -> (windows scored, the loss at every position) for windows of that many tokens of the MDS
    split at ``url`` (fewer than ``windows`` where the split holds fewer tokens)."""
    check_lengths(model.cfg, lengths)
    results = {}
    for length in sorted(set(lengths)):
        cut = token_windows(url, length, windows)
        results[length] = (len(cut), loss_by_position(model, cut, batch_size))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.eval.extrapolation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a training checkpoint (step-N folder or checkpoint root) or a "
                                           "consolidated folder")
    parser.add_argument("--data", required=True, help="a dataset root, one v=N folder, or a plain MDS folder")
    parser.add_argument("--split", default="val", help="the split of a versioned dataset (default: val)")
    parser.add_argument("--lengths", type=int, nargs="+", required=True, help="window lengths in tokens")
    parser.add_argument("--windows", type=int, default=32, help="windows per length (default: 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward (default: 4)")
    parser.add_argument("--train-len", type=int, help="the length the model was trained at (default: max_seq_len)")
    parser.add_argument("--bucket", type=int, help="positions per table row (default: half the training length)")
    parser.add_argument("--output-dir", default=".", help="where extrapolation.json and .png go (default: here)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--attn-impl", choices=["sdpa", "flex"], default="sdpa",
                        help="flex for lengths whose SDPA bias would not fit (no CPU backward needed here)")
    args = parser.parse_args(argv)
    try:
        if args.windows < 1 or args.batch_size < 1:
            raise ValueError("--windows and --batch-size must be positive")
        model, config, _ = load_model(args.checkpoint, device=args.device, dtype=getattr(torch, args.dtype),
                                      attn_impl=args.attn_impl)
        check_lengths(config, args.lengths)
        # Windows are scored without a document mask: one bias for the whole batch.
        check_sdpa_fits(dataclasses.replace(config, attn_uses_sequence_id=False), args.batch_size,
                        max(args.lengths), device_memory(torch.device(args.device)), getattr(torch, args.dtype))
        source = resolve_source(args.data, args.split)
        results = evaluate_extrapolation(model, source.url, args.lengths, args.windows, args.batch_size)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    losses = {length: curve for length, (_, curve) in results.items()}
    train_len = args.train_len or config.max_seq_len
    rows = bucket_table(losses, args.bucket or max(1, train_len // 2))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split, "position": config.position,
              "train_len": train_len, "windows": {length: count for length, (count, _) in results.items()},
              "loss_by_position": {length: curve.tolist() for length, curve in losses.items()}, "buckets": rows}
    (out / "extrapolation.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(losses, train_len, f"{Path(args.checkpoint).name}: loss by position ({config.position})",
         out / "extrapolation.png")
    print(format_table(rows, sorted(losses), train_len))
    print(f"wrote {out / 'extrapolation.json'} and {out / 'extrapolation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
