"""Reading a --config file (YAML or JSON) or a run's config.json into plain values, strictly.

A typo or an ambiguous value in a file is refused with what to fix (the line, where there is one) rather than read some
other way: duplicate keys, YAML 1.1's octal and base-60 numbers, encodings other than UTF-8, oversized and empty
files. A float without a dot (`1e-3`, a string to YAML 1.1) is read as the number it looks like. The values are
checked against TrainConfig's fields by app/config.py.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

import yaml

from app.errors import UserError
from app.run_dir import CONFIG_FILE, holds_a_run, shell_path

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class _YamlLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, plus floats without a dot or exponent sign (1e-3, 2.5e4).

    PyYAML follows YAML 1.1, which reads `learning_rate: 1e-3` as the string '1e-3': the
    way everyone writes a learning rate would then fail the type check.
    """


def _mapping_without_duplicates(loader: _YamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose keys are unique: PyYAML keeps the last of two same keys silently, and a setting written
    twice (one of them forgotten) must not decide the run unseen."""
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: construct_mapping merges it
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # an unhashable key: construct_mapping refuses it with its own marked error
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"found the key {key!r} a second time (first at line {seen[key] + 1}); keep one",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


def _json_object_without_duplicates(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the key(s) {', '.join(map(repr, twice))} appear more than once; keep one")
    return dict(pairs)


# YAML 1.1 numbers that do not mean what they look like: `seed: 010` is the octal 8, `epochs: 1:30` the base-60 90.
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")


def _number_as_written(loader: _YamlLoader, node: yaml.ScalarNode):
    """An int or float scalar, refused where YAML 1.1 reads it other than as written (a leading 0: octal; a `:`:
    base 60), with its line and column: `seed: 010` silently seeded 8, which no one writing it means."""
    construct = loader.construct_yaml_int if node.tag.endswith(":int") else loader.construct_yaml_float
    text = loader.construct_scalar(node)
    if _LEADING_ZERO.match(text):
        sign, digits = ("-" if text.startswith("-") else ""), text.lstrip("+-").replace("_", "").lstrip("0") or "0"
        advice = f"write {sign}{digits} for the number as written"
        base = "an octal number"
    elif ":" in text:
        advice, base = "write the number itself", "a base-60 number"
    else:
        return construct(node)
    raise yaml.constructor.ConstructorError(
        None, None, f"found {text}, which YAML 1.1 reads as {base} ({construct(node)}); {advice}, or quote it if it "
        "is text", node.start_mark)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_YamlLoader.add_constructor("tag:yaml.org,2002:int", _number_as_written)
_YamlLoader.add_constructor("tag:yaml.org,2002:float", _number_as_written)
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _one_line(error: Exception) -> str:
    """A parse error as one line: PyYAML's messages span several (the problem, its context, each with a mark)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
        if error.context and error.context_mark is not None:
            where += f" ({error.context} that starts at line {error.context_mark.line + 1}, " \
                     f"column {error.context_mark.column + 1})"
        return where
    return " ".join(str(error).split())


CONFIG_FILE_REMEDY = "Fix the file (or pass the settings as flags) and run again"


def load_config_file(path: str | Path, remedy: str | None = None) -> dict:
    """The mapping in a YAML or JSON config file; a clear UserError naming the file otherwise. `remedy`: what the
    message of a damaged file (unreadable, or not a mapping) says to do; by default, an unreadable one's says to
    fix it or pass flags (a resumed run takes no flags: it says what a resume can do)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():  # first: a folder (`--config RUN_DIR`, `--config DATA_DIR`) was told its extension was wrong
        repeat = (f" To repeat that run, pass its {CONFIG_FILE}: --config {shell_path(path / CONFIG_FILE)} --output "
                  "NEW_DIR" if holds_a_run(path) else "")
        raise UserError(f"Config file is a folder, not a file: {str(path)!r}. Pass the path of a YAML or JSON file "
                        f"(--config FILE).{repeat}")
    if suffix not in CONFIG_SUFFIXES:
        raise UserError(f"Config file {str(path)!r} must be YAML (.yaml, .yml) or JSON (.json). "
                        f"Received the extension {suffix or '(none)'!r}")
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "is not a regular file" if path.exists() else "not found"
        raise UserError(f"Config file {what}: {str(path)!r}. Pass the path of a YAML or JSON file (--config FILE).")
    kind = "JSON" if suffix == ".json" else "YAML"
    _refuse_oversized(path, remedy)
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is skipped.
        with path.open(encoding="utf-8-sig") as stream:
            text = stream.read()
        _refuse_empty(path, text, remedy)  # JSON's parser said "Expecting value: line 1 column 1 (char 0)"
        values = (json.loads(text, object_pairs_hook=_json_object_without_duplicates) if kind == "JSON"
                  else yaml.load(text, Loader=_YamlLoader))
    except UserError:  # a ValueError too: already the message
        raise
    except UnicodeDecodeError:  # codec jargon ("can't decode byte 0xff in position 0") did not say what to do
        raise UserError(f"Config file {str(path)!r} is not UTF-8 text: {_first_non_utf8(path)}. Save it as UTF-8 "
                        f"(in an editor: Save As, encoding UTF-8) and run again{'. ' + remedy if remedy else ''}"
                        ) from None
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: JSONDecodeError too
        raise UserError(f"Config file {str(path)!r} could not be read as {kind}: {_one_line(error)}. "
                        f"{remedy or CONFIG_FILE_REMEDY}") from None
    if values is None and kind == "YAML" and _only_comments(text):  # a file of commented-out settings: none set
        return {}
    if not isinstance(values, dict):  # `null` too: it was taken for "no settings" (JSON's too)
        shown = "null" if values is None else f"{values!r:.100} ({type(values).__name__})"
        raise UserError(f"Config file {str(path)!r} must hold a mapping of option names to values "
                        f"(like `epochs: 5`). Received: {shown}"
                        + (f". {remedy}" if remedy else ""))
    return values


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def _refuse_empty(path: Path, text: str, remedy: str | None) -> None:
    """An empty file (0 bytes, or blanks only) is a save that did not happen or a truncated file, not a choice of
    the defaults: YAML's read it as "no settings" and trained with every default without a word."""
    if text.strip():
        return
    what = "only blank space" if text else "no text"
    raise UserError(f"Config file {str(path)!r} is empty ({what}): it sets no option. "
                    + (remedy or "Write the settings into it (like `epochs: 5`, keys as in a run's config.json), or "
                                 "leave out --config to train with the defaults"))


# A configuration is a few kilobytes (a run's config.json: about 2). PyYAML parses about 1 MB a second, so a data
# file passed by mistake (`--config data.yaml`, hundreds of MB) held the command for minutes before any message.
MAX_CONFIG_BYTES = 1024 * 1024


def _refuse_oversized(path: Path, remedy: str | None) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return  # the read that follows reports it
    if size > MAX_CONFIG_BYTES:
        raise UserError(f"Config file {str(path)!r} is {size / 2**20:.1f} MiB; a configuration holds a few settings "
                        f"(at most {MAX_CONFIG_BYTES // 2**20} MiB is read). "
                        + (remedy or "Pass the YAML or JSON file of options (--config FILE, keys as in a run's "
                                     "config.json), not a data file."))


def _first_non_utf8(path: Path) -> str:
    """Where a file stops being UTF-8, and what it probably is, for the message that says to save it as UTF-8 (the
    decoder's own position counts from the chunk a stream read, not from the file's start)."""
    try:
        raw = path.read_bytes()  # at most MAX_CONFIG_BYTES
    except OSError as error:
        return f"it could not be read again ({error.strerror or error})"
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        raw[skip:].decode("utf-8")
        return "it changed while being read"
    except UnicodeDecodeError as error:
        start = skip + error.start
    line = raw[:start].count(b"\n") + 1
    where = f"byte {raw[start]:#04x} on line {line}"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return f"{where}; it is UTF-16, by its byte-order mark (Windows Notepad's 'Unicode')"
    return f"{where}; perhaps a legacy encoding such as Latin-1 or Windows-1252"


def config_file_label(path: str | Path) -> str:
    return f"config file {str(path)!r}"


