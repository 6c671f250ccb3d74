# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "torch==2.13.0",
#     "transformers==5.23.0",
#     "huggingface-hub==2.4.0",
#     "safetensors==0.8.0",
#     "pillow==13.0.0",
#     "numpy==2.4.6",
# ]
# ///
"""Fine-tune an image classifier on an `imagefolder` dataset and push it to a model repo.

mlbench runs this script as a Hugging Face Job (`uv run` reads the pinned dependencies above);
it is shipped inside the package and sent with the Job, so what trains is exactly this file.

    train.py --dataset <ns>/<dataset repo> --revision <sha> --base-model <hub id or folder>
             --model-repo <ns>/<model repo> --epochs N --learning-rate LR --batch-size B

The dataset holds `train/<class>/<file>` and `validation/<class>/<file>` (the layout
`datasets`' imagefolder reads); the classes are the train folders, sorted, so `id2label` is the
same on every run. The model is the backbone with a fresh classification head, trained with
AdamW and a linear decay; the epoch with the best validation accuracy (the last one when there
is no validation image) is kept, saved with its image processor and `mlbench_train.json`, and
pushed to a private repo. `--data-dir` and `--output-dir --no-push` run it without the Hub.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "validation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="Hub dataset repo id (imagefolder layout)")
    source.add_argument("--data-dir", type=Path, help="a local imagefolder instead of the Hub")
    parser.add_argument("--revision", default=None, help="dataset revision (commit sha)")
    parser.add_argument("--base-model", required=True, help="Hub model id or local folder")
    parser.add_argument("--model-repo", help="model repo to push to (created private)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the model is saved (default: a temporary folder)")
    parser.add_argument("--no-push", action="store_true", help="save only, push nothing")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.no_push and not args.model_repo:
        parser.error("--model-repo is required unless --no-push")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.learning_rate > 0:
        parser.error("--learning-rate must be positive")
    return args


def read_imagefolder(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The classes (train folders, sorted) and, per split, (image path, class index) pairs."""
    train = root / "train"
    if not train.is_dir():
        raise SystemExit(f"{root}: no train/ folder (expected train/<class>/<image>)")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise SystemExit(f"{train}: needs at least two class folders, found {classes}")
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        items = []
        for folder in sorted((root / split).glob("*/")) if (root / split).is_dir() else []:
            if folder.name not in index:
                raise SystemExit(f"{folder}: class {folder.name!r} has no train/ folder")
            items += [(f, index[folder.name]) for f in sorted(folder.iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES]
        splits[split] = items
    if not splits["train"]:
        raise SystemExit(f"{train}: no images")
    return classes, splits


def fetch_dataset(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    target = Path(tempfile.mkdtemp(prefix="mlbench-data-"))
    snapshot_download(repo_id, repo_type="dataset", revision=revision, local_dir=target,
                      allow_patterns=[f"{s}/**" for s in SPLITS])
    return target


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(items: list[tuple[Path, int]], size: int, processor, shuffle: bool):  # noqa: ANN001, ANN201
    """(pixel_values, labels) tensors, `size` images at a time, through the model's processor."""
    import torch
    from PIL import Image

    order = list(range(len(items)))
    if shuffle:
        random.shuffle(order)
    for start in range(0, len(order), size):
        chunk = [items[i] for i in order[start:start + size]]
        images = []
        for path, _ in chunk:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        yield pixels, torch.tensor([label for _, label in chunk])


def accuracy(model, items, processor, batch_size, device) -> float:  # noqa: ANN001
    import torch

    if not items:
        return float("nan")
    model.eval()
    right = 0
    with torch.no_grad():
        for pixels, labels in batches(items, batch_size, processor, shuffle=False):
            logits = model(pixel_values=pixels.to(device)).logits
            right += int((logits.argmax(-1).cpu() == labels).sum())
    return right / len(items)


def train(args: argparse.Namespace, root: Path, out: Path) -> dict:
    """Train, keep the best epoch, save it to `out`; what happened, for mlbench_train.json."""
    import torch
    import transformers
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    seed_everything(args.seed)
    classes, splits = read_imagefolder(root)
    print(f"classes: {len(classes)}; train images: {len(splits['train'])}; "
          f"validation images: {len(splits['validation'])}", flush=True)
    id2label = dict(enumerate(classes))
    processor = AutoImageProcessor.from_pretrained(args.base_model, backend="pil")
    model = AutoModelForImageClassification.from_pretrained(
        args.base_model, num_labels=len(classes), id2label=id2label,
        label2id={c: i for i, c in id2label.items()}, ignore_mismatched_sizes=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    steps = args.epochs * -(-len(splits["train"]) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))
    scaler = torch.amp.GradScaler(device, enabled=device == "cuda")
    best: tuple[float, int, dict] | None = None
    started = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for pixels, labels in batches(splits["train"], args.batch_size, processor, shuffle=True):
            with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
                loss = model(pixel_values=pixels.to(device), labels=labels.to(device)).loss
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total += float(loss.detach()) * len(labels)
        val = accuracy(model, splits["validation"], processor, args.batch_size, device)
        print(f"epoch {epoch}/{args.epochs}: train loss {total / len(splits['train']):.4f}, "
              f"validation accuracy {val:.4f}", flush=True)
        score = val if val == val else float(epoch)  # no validation: the last epoch wins
        if best is None or score >= best[0]:
            best = (score, epoch, {k: v.detach().cpu().clone()
                                   for k, v in model.state_dict().items()})
    if best is None:
        raise SystemExit("no epoch ran")
    model.load_state_dict(best[2])
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {
        "classes": classes, "best_epoch": best[1], "epochs": args.epochs,
        "validation_accuracy": best[0] if splits["validation"] else None,
        "train_images": len(splits["train"]), "validation_images": len(splits["validation"]),
        "train_seconds": round(time.monotonic() - started, 3), "base_model": args.base_model,
        "learning_rate": args.learning_rate, "batch_size": args.batch_size, "seed": args.seed,
        "dataset": args.dataset or str(args.data_dir), "dataset_revision": args.revision,
        "device": device, "versions": {"torch": torch.__version__,
                                       "transformers": transformers.__version__},
    }


def push(out: Path, repo_id: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=True, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=out,
                             commit_message="mlbench: fine-tuned image classifier")
    return info.oid


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.data_dir or fetch_dataset(args.dataset, args.revision)
    out = args.output_dir or Path(tempfile.mkdtemp(prefix="mlbench-model-"))
    out.mkdir(parents=True, exist_ok=True)
    report = train(args, root, out)
    (out / "mlbench_train.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"trained in {report['train_seconds']:.0f} s; best epoch {report['best_epoch']}",
          flush=True)
    if not args.no_push:
        print(f"pushed {args.model_repo} at {push(out, args.model_repo)}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
