"""Encoder outputs computed once per clip and cached on disk while the encoder is frozen: encoding is the
most expensive step of training small models on a CPU, and its result never changes."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from sota.data.featurizer import Featurizer

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30  # seconds between progress lines in logs


@torch.no_grad()
def encode_clips(encoder: Featurizer, waves: list[np.ndarray], batch_size: int = 32,
                 device: torch.device | str = "cpu", desc: str = "encode") -> torch.Tensor:
    """Encoder outputs [N, T, D] in float16 (half the memory; the connector casts back), computed on `device`;
    T: the longest clip's chunks of context, whole (frames past a clip's own chunks are zero, never read).

    The encoder is moved to `device` for the duration and back afterwards: a split set up after training
    (the test split) finds it wherever Lightning's teardown left it (on the CPU)."""
    # Clips longer than the encoder context come in several chunks: every clip gets the longest one's frames.
    frames = encoder.padded_frames([len(w) for w in waves])
    # Batches of clips of similar length: a batch encodes its longest clip's chunks for every clip (and, with
    # encoder.bucket_s, each of its buckets in a pass of its own), so similar lengths waste the least.
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out = torch.zeros(len(waves), frames, encoder.out_dim, dtype=torch.float16)
    home = next(encoder.parameters()).device
    encoder.to(device)
    t0 = last = time.monotonic()
    try:
        for start in tqdm(range(0, len(waves), batch_size), desc=desc, leave=False, disable=None):
            if time.monotonic() - last >= PROGRESS_EVERY_S:  # tqdm shows nothing when output is not a terminal
                last = time.monotonic()
                log.info("%s: %d/%d clips (%.0f s)", desc, start, len(waves), last - t0)
            rows = order[start:start + batch_size]
            inputs = encoder.featurize([waves[i] for i in rows])
            inputs = {k: v.to(device) for k, v in inputs.items()}
            hidden = encoder(**inputs).to("cpu", torch.float16)
            out[rows, :hidden.shape[1]] = hidden
    finally:
        encoder.to(home)
    return out


def cache_key(fingerprint: str, clip_ids: list[str], paths: list[Path]) -> str:
    h = hashlib.sha1(fingerprint.encode())
    for cid, p in zip(clip_ids, paths):
        st = p.stat()
        h.update(f"{cid}|{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached_encode(encoder: Featurizer, waves: list[np.ndarray], key: str, cache_dir: Path,
                  batch_size: int = 32, device: torch.device | str = "cpu", desc: str = "encode") -> torch.Tensor:
    path = cache_dir / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["features"]
        except Exception as err:  # a corrupt cache entry is recomputed, never trusted
            log.warning("ignoring unreadable feature cache %s: %s", path, err)
    feats = encode_clips(encoder, waves, batch_size, device, desc)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": feats.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return feats
