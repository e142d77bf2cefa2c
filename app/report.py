"""Human-readable evaluation outputs: report.md and confusion_matrix.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from app import fonts  # noqa: E402
from app.escaping import markdown_cell, markdown_code, markdown_text, terminal_cell, visible  # noqa: E402
from app.metrics import most_confused_pairs, scored_classes  # noqa: E402
from data.atomic_write import write_atomically  # noqa: E402
from data.shown_text import first_few  # noqa: E402


MAX_LABEL_CHARS = 40  # a tick label longer than this is cut with "…": one 200-character name took the whole figure
MAX_PANEL_INCHES = 30.0  # each panel's side: 100 classes at full cell size, more classes get smaller cells
MIN_LABEL_PITCH = 0.1  # inches between tick labels of 6 pt; smaller cells name every k-th class


def _tick_label(name: str) -> str:
    name = visible(name)  # a newline would break the tick label
    return name if len(name) <= MAX_LABEL_CHARS else name[:MAX_LABEL_CHARS - 1] + "…"


def confusion_figure(matrix, class_names: list[str]):
    """Two panels: row-normalised (recall per true class) and raw counts. Create and save it inside
    `fonts.matplotlib_text(class_names, ...)` (as plot_confusion_matrix does) so that names in other
    scripts find a font that has them.

    Bounded whatever the number of classes: each panel at most MAX_PANEL_INCHES a side (at 100 dpi, a 7,500 x
    3,700 pixel PNG), cells shrinking beyond 100 classes, and every k-th class named once cells are too small
    for a label each (report.md's per-class table names them all). Before, the figure grew with the classes:
    500 classes made a 400-megapixel PNG and took gigabytes to draw."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    labels = [_tick_label(name) for name in class_names]
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    cell = min(0.45 if n <= 20 else 0.28, (MAX_PANEL_INCHES - 2.0) / max(n, 1))
    every = max(1, int(np.ceil(MIN_LABEL_PITCH / cell)))  # 1 up to 280 classes
    ticks = list(range(0, n, every))
    side = max(4.0, 2.0 + cell * n)
    font = 9 if n <= 15 else 7 if n <= 30 else 6  # points; a 0.28 in cell holds a 6 pt label
    figure, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side + 1.0), constrained_layout=True)
    for axis, values, title, fmt in (
        (axes[0], normalised, "Normalised by true class", "{:.2f}"),
        (axes[1], matrix, "Counts", "{:d}"),
    ):
        image = axis.imshow(values, cmap="Blues", vmin=0, vmax=1 if values is normalised else max(1, values.max()),
                            interpolation="nearest")
        axis.set_title(title if every == 1 else f"{title} (1 class in {every} named)")
        axis.set_xlabel("Predicted")
        axis.set_ylabel("True")
        axis.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=font)
        axis.set_yticks(ticks, [labels[i] for i in ticks], fontsize=font)
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


def _skipped_line(skipped: list[dict]) -> list[str]:
    """The files of the scored part of the folder that could not be read (none: no line); all in metrics.json."""
    if not skipped:
        return []
    shown = [f"{markdown_code(item['path'])} ({markdown_text(item['reason'])})" for item in skipped]
    return [f"- Not scored, unreadable: {len(skipped)} file(s): {first_few(shown, 5)} (all in metrics.json's "
            "`skipped_files`)"]


def render_report(metrics: dict, context: dict, worst: list[dict]) -> str:
    ci = metrics["ci95"]
    temperature = metrics["calibration"]["fitted_temperature"]
    calibration = ""
    if temperature is not None:
        applied = "applied" if metrics["calibration"]["temperature_applied"] else "not applied; --apply-temperature"
        calibration = f" (temperature fitted on validation: {temperature:.3f}, {applied})"
    lines = [
        f"# Evaluation: {markdown_text(context['run_dir'])}",
        "",
        f"- Data: {markdown_code(context['data_dir'])} ({context['split_description']})",
        *_skipped_line(metrics.get("skipped_files") or []),
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
    lines += _per_class_rows(metrics)
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


NO_VALUE = "–"  # a score of a class without the files it needs: undefined, not 0


def _per_class_rows(metrics: dict) -> list[str]:
    """One table row per class. A class without files has no recall, and one never predicted no precision: those
    show NO_VALUE (metrics.json has 0), and a class with neither is marked as left out of macro F1, which it is (a
    row of zeros beside a macro F1 of 1.000 read as a contradiction)."""
    matrix = np.asarray(metrics["confusion_matrix"])
    scored = scored_classes(matrix) if matrix.size else np.ones(len(metrics["per_class"]), bool)
    rows = []
    for i, (name, scores) in enumerate(metrics["per_class"].items()):
        has_files, predicted = matrix[i].sum() > 0, matrix[:, i].sum() > 0
        precision = f"{scores['precision']:.3f}" if predicted else NO_VALUE
        recall = f"{scores['recall']:.3f}" if has_files else NO_VALUE
        f1 = f"{scores['f1']:.3f}" if scored[i] else f"{NO_VALUE} (no files, never predicted: not in macro F1)"
        rows.append(f"| {markdown_cell(name)} | {precision} | {recall} | {f1} | {scores['support']} |")
    return rows


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
    """One Markdown table of several runs evaluated on the same files, for the terminal (terminal_cell)."""
    lines = [
        "| run | backbone | strategy | examples | accuracy (95% CI) | macro F1 | ECE |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        low, high = row["ci95"]["accuracy"]
        lines.append(
            f"| {terminal_cell(row['run'])} | {terminal_cell(row['backbone'])} | {row['strategy']} | "
            f"{row['num_examples']} | "
            f"{row['accuracy']:.4f} ({low:.3f}-{high:.3f}) | {row['macro_f1']:.4f} | {row['ece']:.4f} |"
        )
    return "\n".join(lines)
