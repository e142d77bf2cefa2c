"""Human-readable evaluation outputs: report.md and confusion_matrix.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from app import fonts  # noqa: E402
from app.escaping import markdown_cell, markdown_code, visible  # noqa: E402
from app.metrics import most_confused_pairs  # noqa: E402
from data.atomic_write import write_atomically  # noqa: E402


def confusion_figure(matrix, class_names: list[str]):
    """Two panels: row-normalised (recall per true class) and raw counts. Create and save it inside
    `fonts.matplotlib_text(class_names, ...)` (as plot_confusion_matrix does) so that names in other
    scripts find a font that has them."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    class_names = [visible(name) for name in class_names]  # a newline would break the tick label
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    cell = 0.45 if n <= 20 else 0.28
    side = max(4.0, 2.0 + cell * n)
    font = 9 if n <= 15 else 7 if n <= 30 else 6  # points; a 0.28 in cell holds a 6 pt label
    figure, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side + 1.0), constrained_layout=True)
    for axis, values, title, fmt in (
        (axes[0], normalised, "Normalised by true class", "{:.2f}"),
        (axes[1], matrix, "Counts", "{:d}"),
    ):
        image = axis.imshow(values, cmap="Blues", vmin=0, vmax=1 if values is normalised else max(1, values.max()))
        axis.set_title(title)
        axis.set_xlabel("Predicted")
        axis.set_ylabel("True")
        axis.set_xticks(range(n), class_names, rotation=90, fontsize=font)
        axis.set_yticks(range(n), class_names, fontsize=font)
        if n <= 20:
            threshold = (1.0 if values is normalised else max(1, values.max())) / 2
            for t in range(n):
                for p in range(n):
                    value = values[t, p]
                    axis.text(p, t, fmt.format(value.item()), ha="center", va="center", fontsize=font - 1,
                              color="white" if value > threshold else "black")
        figure.colorbar(image, ax=axis, shrink=0.8)
    return figure


def save_figure(figure, path: Path, dpi: int = 100) -> None:
    """Write a figure atomically and close it."""
    try:
        write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=dpi))
    finally:
        plt.close(figure)


def plot_confusion_matrix(matrix, class_names: list[str], path: Path) -> None:
    with fonts.matplotlib_text(class_names, path.name):
        save_figure(confusion_figure(matrix, class_names), path)


def render_report(metrics: dict, context: dict, worst: list[dict]) -> str:
    ci = metrics["ci95"]
    temperature = metrics["calibration"]["fitted_temperature"]
    calibration = ""
    if temperature is not None:
        applied = "applied" if metrics["calibration"]["temperature_applied"] else "not applied; --apply-temperature"
        calibration = f" (temperature fitted on validation: {temperature:.3f}, {applied})"
    lines = [
        f"# Evaluation: {visible(context['run_dir'])}",
        "",
        f"- Data: {markdown_code(context['data_dir'])} ({context['split_description']})",
        f"- Model: {markdown_code(context.get('model') or 'model.keras')}",
        f"- Examples: {metrics['num_examples']}, classes: {len(metrics['class_names'])}",
        f"- Accuracy: **{metrics['accuracy']:.4f}** (bootstrap 95% CI {ci['accuracy'][0]:.3f}-{ci['accuracy'][1]:.3f}), "
        f"top-{metrics['k']} accuracy: {metrics['top_k_accuracy']:.4f}",
        f"- Macro F1: {metrics['macro_f1']:.4f} (95% CI {ci['macro_f1'][0]:.3f}-{ci['macro_f1'][1]:.3f}), "
        f"weighted F1: {metrics['weighted_f1']:.4f}",
        f"- Expected calibration error (15 bins): {metrics['ece']:.4f}{calibration}",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, scores in metrics["per_class"].items():
        lines.append(f"| {markdown_cell(name)} | {scores['precision']:.3f} | {scores['recall']:.3f} | "
                     f"{scores['f1']:.3f} | {scores['support']} |")
    lines += ["", "## Most confused pairs", ""]
    pairs = most_confused_pairs(metrics["confusion_matrix"], metrics["class_names"])
    lines += [f"- {markdown_cell(true)} predicted as {markdown_cell(predicted)}: {count}"
              for true, predicted, count in pairs] or ["- none"]
    lines += ["", "## Most confident mistakes", ""]
    if worst:
        lines += ["| file | true | predicted | confidence |", "|---|---|---|---:|"]
        lines += [f"| {markdown_cell(w['file'])} | {markdown_cell(w['true'])} | {markdown_cell(w['predicted'])} | "
                  f"{w['confidence']:.3f} |" for w in worst]
    else:
        lines.append("- none")
    lines += ["", "All mistakes: misclassified.csv", "", "![confusion matrix](confusion_matrix.png)", "",
              "![reliability diagram](reliability.png)", ""]
    return "\n".join(lines)


def plot_reliability(bins: list[dict], ece: float, temperature: float | None, path: Path) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with bin counts below."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=[3, 1], sharex=True,
                                         constrained_layout=True)
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    accuracy = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    top.bar(centres, accuracy, width=width * 0.95, color="#4c72b0", edgecolor="black", label="accuracy")
    gaps = [(c, b["confidence"] - b["accuracy"]) for c, b in zip(centres, bins) if b["count"]]
    top.bar([c for c, _ in gaps], [g for _, g in gaps], bottom=[b["accuracy"] for b in bins if b["count"]],
            width=width * 0.95, color="#dd8452", alpha=0.6, label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("Accuracy")
    title = f"Reliability (ECE {ece:.3f})"
    if temperature is not None:
        title += f", fitted temperature {temperature:.2f}"
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="grey")
    bottom.set_xlabel("Confidence (max probability)")
    bottom.set_ylabel("Examples")
    bottom.set_xlim(0, 1)
    save_figure(figure, path)


def render_comparison(rows: list[dict]) -> str:
    """One Markdown table of several runs evaluated on the same files."""
    lines = [
        "| run | backbone | strategy | examples | accuracy (95% CI) | macro F1 | ECE |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        low, high = row["ci95"]["accuracy"]
        lines.append(
            f"| {markdown_cell(row['run'])} | {markdown_cell(row['backbone'])} | {row['strategy']} | "
            f"{row['num_examples']} | "
            f"{row['accuracy']:.4f} ({low:.3f}-{high:.3f}) | {row['macro_f1']:.4f} | {row['ece']:.4f} |"
        )
    return "\n".join(lines)
