"""Vetting the archive a genome hands in, before `torch.export.load` sees a byte of it.

The model file is hostile input. `torch.export.load` is not made for that (it
unpickles, loads AOTInductor libraries, sympifies shape expressions and pastes
names into generated code), so only the structure a plain `torch.export.save`
writes gets through `vet_archive`: a PT2 archive (torch >= 2.11) with one program,
its weights and constants as raw bytes described by JSON, and nothing that is
unpickled or run. Members are accepted by what they are, not by one torch
version's file list; the archives of every supported version are in tests/data/.
"""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile
from typing import Any


class Rejected(Exception):
    """The model cannot be scored: the reason goes into the record as `invalid`."""


# Oldest and newest torch (major, minor) whose torch.export.save archives were run and
# vetted (tests/data/export_torch*.pt2: 2.11, 2.13, 2.14). Older ones pickle the weights:
# 2.8 writes data/weights/model.pt (a torch.save state dict), 2.7 and before a plain zip
# of serialized_state_dict.pt and friends. Keep in step with setup.cfg's torch range.
SUPPORTED_TORCH = ((2, 11), (2, 14))
SUPPORTED_TEXT = "torch 2.11 to 2.14"
MAX_ARCHIVE_BYTES = 16 << 30
MAX_MEMBERS = 1 << 16
MAX_SMALL = 64  # bytes of a format marker such as archive_version or byteorder

_NAME = re.compile(r"[\w.:\-]*")  # names, op targets, devices: never code
_FILE = re.compile(r"(?!\.+$)[\w.\-]+")  # one path component: never '.', '..' or '/'
_TEXT_FIELDS = {"as_string", "as_strings", "in_spec", "out_spec", "torch_version"}  # passed as data
_MARKERS = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
}  # small format markers, each a word or a number
_PROGRAM = "models/model.json"
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"  # a pickle: replaced by nothing, never loaded
_PAYLOADS = {
    "data/weights/": "data/weights/model_weights_config.json",
    "data/constants/": "data/constants/model_constants_config.json",
}
# torch picks the loader by the payload's name: weight_N and tensor_N are raw bytes, while
# custom_obj_N and opaque_obj_N are unpickled whatever use_pickle says. Only raw ones pass.
_RAW_PAYLOAD = {
    "data/weights/": re.compile(r"weight_\d+"),
    "data/constants/": re.compile(r"tensor_\d+"),
}
_LEGACY = {
    "serialized_exported_program.json",
    "serialized_state_dict.pt",  # torch <= 2.7
    "data/weights/model.pt",
    "data/constants/model.pt",
}  # torch 2.8: pickled state dict


def torch_support(version: str) -> tuple[str, str] | None:
    """None when archives of torch `version` are known to pass vetting, else (kind, why).

    kind is "old" (every model would be refused), "new" (untested) or "unknown".
    Used by the CLI up front and by `vet_archive` to explain a refusal.
    """
    found = re.match(r"(\d+)\.(\d+)", version)
    if not found:
        return (
            "unknown",
            f"torch {version} is not a version evolve knows; it supports {SUPPORTED_TEXT}",
        )
    minor = (int(found[1]), int(found[2]))
    low, high = SUPPORTED_TORCH
    if minor < low:
        return "old", (
            f"torch {version} is too old: its torch.export.save pickles the weights, "
            f"which the evaluator refuses; evolve supports {SUPPORTED_TEXT}"
        )
    if minor > high:
        return "new", (
            f"torch {version} is newer than evolve was tested with ({SUPPORTED_TEXT}); "
            "its exported models may be refused as invalid"
        )
    return None


def vet_archive(path: str) -> io.BytesIO:
    """A copy of the archive that is safe to give `torch.export.load`, or Rejected.

    Node metadata (free text such as stack traces, which FX pastes into code) is
    dropped and the pickled sample inputs are emptied; every other string in the
    program must look like a name. A refusal names the supported torch versions
    when the running torch is not one of them.
    """
    try:
        return _vet(path)
    except Rejected as exc:
        torch = sys.modules.get("torch")  # the evaluator has imported it; never import it here
        problem = torch_support(torch.__version__) if torch is not None else None
        if problem is None or SUPPORTED_TEXT in str(exc):
            raise
        raise Rejected(f"{exc} ({problem[1]})") from None


def _vet(path: str) -> io.BytesIO:
    try:
        src = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise Rejected(f"the handed-in model is not a torch.export archive: {exc}") from exc
    out = io.BytesIO()
    with src, zipfile.ZipFile(out, "w") as dst:
        members = _members(src)
        configs = {
            folder: _payload_config(src, members, config, _RAW_PAYLOAD[folder])
            for folder, config in _PAYLOADS.items()
        }
        for name, info in members.items():
            data = b"" if name == _SAMPLE_INPUTS else src.read(info)
            if name == _PROGRAM:
                data = json.dumps(_clean(_json(data, name), "")).encode()
            elif name in _MARKERS:
                if len(data) > MAX_SMALL or not _NAME.fullmatch(
                    data.decode("ascii", "replace").strip()
                ):
                    raise Rejected(f"the model archive's {name!r} is not a format marker; refused")
                if name == "archive_format" and data.strip() != b"pt2":
                    raise Rejected(f"the model archive's format is {data[:20]!r}, not pt2; refused")
            elif name not in _PAYLOADS.values() and name != _SAMPLE_INPUTS:
                folder, file = name.rsplit("/", 1)[0] + "/", name.rsplit("/", 1)[-1]
                if folder not in configs or file not in configs[folder]:
                    raise _unknown(info.filename)
            dst.writestr(info.filename, data)
    out.seek(0)
    return out


def _members(src: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by name below their one root folder, checked for shape and size."""
    infos = src.infolist()
    names = [info.filename for info in infos]
    if _LEGACY & ({name.split("/", 1)[-1] for name in names} | set(names)):
        raise Rejected(
            "the handed-in model is in an older torch.export.save format that "
            "pickles the weights, which the evaluator refuses; evolve supports "
            f"{SUPPORTED_TEXT}"
        )
    if len(infos) > MAX_MEMBERS:
        raise Rejected(
            f"the model archive has {len(infos)} members (at most {MAX_MEMBERS}); refused"
        )
    if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
        raise Rejected("the handed-in model archive is larger than 16 GiB")
    if len(set(names)) != len(names):
        raise Rejected("the model archive holds one name twice; refused")
    roots = {name.split("/", 1)[0] for name in names}
    members = {}
    for info in infos:
        parts = info.filename.split("/")
        if len(roots) != 1 or len(parts) < 2 or not all(_FILE.fullmatch(p) for p in parts):
            raise _unknown(info.filename)
        members["/".join(parts[1:])] = info
    for required in (_PROGRAM, "archive_format", *_PAYLOADS.values()):
        if required not in members:
            raise Rejected(
                f"the model archive has no {required!r}: not what torch.export.save writes; refused"
            )
    return members


def _payload_config(
    src: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], config: str, raw: re.Pattern[str]
) -> set[str]:
    """The raw tensor files a weights or constants config names; pickled payloads refused."""
    entries = _json(src.read(members[config]), config)
    _clean(entries, "")
    if not isinstance(entries, dict) or not isinstance(entries.get("config", {}), dict):
        raise Rejected(f"the model archive's {config!r} is not a payload config; refused")
    files = set()
    for name, payload in entries.get("config", {}).items():
        if (
            not isinstance(payload, dict)
            or payload.get("use_pickle") is not False
            or not isinstance(payload.get("tensor_meta"), dict)
            or not raw.fullmatch(str(payload.get("path_name", "")))
        ):
            raise Rejected(f"the model stores {name!r} as a pickled or custom object; refused")
        files.add(payload["path_name"])
    return files


def _json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"the model archive's {name!r} is not JSON: {exc}"[:300]) from None


def _unknown(filename: str) -> Rejected:
    return Rejected(
        f"the model archive holds {filename!r}, which a plain torch.export.save "
        "never writes; refused"
    )


def _clean(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {
            k: {} if k == "metadata" else _clean(v, k)
            for k, v in value.items()
            if _is_name(k, "key")
        }
    if isinstance(value, list):
        return [_clean(v, key) for v in value]
    if isinstance(value, str) and key not in _TEXT_FIELDS:
        _is_name(value, key)
    return value


def _is_name(value: str, key: str) -> bool:
    if not _NAME.fullmatch(value):
        raise Rejected(
            f"the exported program holds {key} {value[:60]!r}, which is not a name; refused"
        )
    return True
