"""How fast do frozen Whisper tiny.en features teach characters on this CPU? A two-layer MLP over pairs of
encoder frames (25 per second) trained with CTC for a fixed wall-clock budget on a corpus' cached training
features, then scored greedily on its test split. It bounds what any connector + LLM could hear in the same
time from the same features and clips.

    python experiments/2026-12-03_cpu_default/ctc_probe.py CORPUS_DIR FEATURES_DIR [seconds]

CORPUS_DIR: a built synthetic corpus ($SOTA_CACHE/data/synthetic/<fingerprint>); FEATURES_DIR: the feature cache
beside it ($SOTA_CACHE/data/synthetic/features), written by a run with encoder.bucket_s=null (whole 5 s
contexts). The cache files are matched to splits by their number of clips.
"""

import json
import sys
import time
from pathlib import Path

import jiwer
import torch
from safetensors.torch import load_file

WINDOW, HIDDEN, BATCH, LR = 2, 512, 32, 2e-3


def rows(corpus: Path, split: str) -> list[dict]:
    data = json.loads((corpus / f"{split}.json").read_text())
    return data["annotation"] if isinstance(data, dict) else data


def main(corpus: Path, features: Path, budget_s: float) -> None:
    torch.manual_seed(0)
    train, test = rows(corpus, "train"), rows(corpus, "test")
    by_size = {}
    for f in features.glob("*.safetensors"):
        x = load_file(str(f))["features"]
        by_size[x.shape[0]] = x
    x_train, x_test = by_size[len(train)], by_size[len(test)]
    asr = [i for i, r in enumerate(train) if r["task"] == "asr"]
    asr_test = [i for i, r in enumerate(test) if r["task"] == "asr"]
    chars = sorted(set("".join(train[i]["text"] for i in asr)))
    index = {c: k + 1 for k, c in enumerate(chars)}  # 0 is CTC's blank
    net = torch.nn.Sequential(torch.nn.Linear(x_train.shape[2] * WINDOW, HIDDEN), torch.nn.GELU(),
                              torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.GELU(), torch.nn.Linear(HIDDEN, len(chars) + 1))
    opt = torch.optim.AdamW(net.parameters(), lr=LR)

    def forward(x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return net(x[:, : t // WINDOW * WINDOW].reshape(b, t // WINDOW, WINDOW * d).float())

    def frames(row: dict, limit: int) -> int:
        return min(limit, int(row["duration"] * 50 / WINDOW) + 1)

    t0, step = time.time(), 0
    while time.time() - t0 < budget_s:
        pick = [asr[j] for j in torch.randint(len(asr), (BATCH,)).tolist()]
        log_probs = forward(x_train[pick]).log_softmax(-1).transpose(0, 1)
        targets = [torch.tensor([index[c] for c in train[i]["text"]]) for i in pick]
        loss = torch.nn.functional.ctc_loss(
            log_probs, torch.cat(targets), torch.tensor([frames(train[i], log_probs.shape[0]) for i in pick]),
            torch.tensor([len(t) for t in targets]), zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} at {time.time() - t0:.0f} s", flush=True)
    with torch.no_grad():
        best = forward(x_test[asr_test]).argmax(-1)
    hyps = []
    for i, row in zip(asr_test, best):
        out, prev = [], 0
        for k in row.tolist()[: frames(test[i], row.shape[0])]:
            if k != prev and k:
                out.append(chars[k - 1])
            prev = k
        hyps.append(" ".join("".join(out).split()))
    refs = [test[i]["text"] for i in asr_test]
    print(f"{step} steps in {budget_s:.0f} s: test WER {jiwer.wer(refs, hyps):.3f}, CER {jiwer.cer(refs, hyps):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 60.0)
