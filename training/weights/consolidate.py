"""Turn a sharded training checkpoint into the consolidated folder training.weights.inference loads, one tensor
at a time.

    python -m training.consolidate CHECKPOINT OUT_DIR [--tokenizer tokenizer.json]

CHECKPOINT is one checkpoint folder (``.../step-00000012``) or a checkpoint root (its newest complete
checkpoint is used), local or on an object store. OUT_DIR gets ``model.safetensors`` and
``config.json`` (and ``tokenizer.json`` when given): the format of training.weights.layout.

Memory stays near the size of the largest tensor, whatever the model's size: the DCP metadata is
read once, the safetensors header is written from it, and then each weight is assembled from its
shards (every rank's piece, read with a one-tensor load plan) and streamed to the file before the
next is read. Optimizer state is never read.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Iterator

import torch

from training.weights.checkpoint_reader import TensorSpecs, model_tensors
from training.weights.layout import CONFIG_NAME, SAFETENSORS_DTYPES, TOKENIZER_NAME, WEIGHTS_NAME


def write_safetensors(path: Path, specs: TensorSpecs, tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """A safetensors file whose header comes from ``specs`` (name -> (shape, dtype)) and whose data is
    streamed from ``tensors`` (in the order of ``specs``); written to a temporary name and renamed into place."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, dtype) in specs.items():
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            for (name, tensor), expected in zip(tensors, specs):
                if name != expected:
                    raise AssertionError(f"tensors arrived out of order: {name} before {expected}")
                out.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
                del tensor
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def consolidate(url: str, out_dir: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Write the consolidated folder (model.safetensors, config.json, tokenizer.json) for ``url``."""
    config, specs, tensors = model_tensors(url)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_NAME, specs, tensors)
    (out / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        shutil.copyfile(tokenizer, out / TOKENIZER_NAME)
    return out


def return_freed_tensors_to_the_os() -> None:
    """Serve every allocation over 1 MiB with its own mmap, given back to the OS when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB); tensors of a few
    MiB then come from the heap, whose freed space stays in the process, and peak memory grows with the
    model. Measured with a 17 MB largest tensor: peak RSS grew by 55 MB (200 MB model) and 69 MB (400 MB)
    with glibc's default, by 53 MB for both with a fixed threshold (setting it stops the adjustment).
    Only the command does this, since it changes the allocator of the whole process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to set
        return
    m_mmap_threshold = -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 1 << 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.consolidate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint folder (step-N) or a checkpoint root (newest complete)")
    parser.add_argument("out_dir", help="the consolidated folder to write")
    parser.add_argument("--tokenizer", help="a tokenizer.json to copy beside the weights")
    args = parser.parse_args(argv)
    return_freed_tensors_to_the_os()
    try:
        out = consolidate(args.checkpoint, args.out_dir, args.tokenizer)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
