"""Vetting the archive a genome hands in, before `torch.export.load` sees a byte of it.

The model file is hostile input. `torch.export.load` is not made for that (it
unpickles, loads AOTInductor libraries, sympifies shape expressions and pastes
names into generated code), so only what a plain `torch.export.save` writes
gets through `vet_archive`: no pickles, no free text where code is generated.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any


class Rejected(Exception):
    """The model cannot be scored: the reason goes into the record as `invalid`."""


MAX_ARCHIVE_BYTES = 16 << 30
# Members of a `torch.export.save` archive of one plain module, below its root folder.
_MEMBERS = re.compile(r"archive_format|archive_version|byteorder|\.data/version"
                      r"|\.data/serialization_id|models/model\.json|data/sample_inputs/model\.pt"
                      r"|data/weights/(weight_\d+|model_weights_config\.json)"
                      r"|data/constants/(tensor_\d+|model_constants_config\.json)")
_NAME = re.compile(r"[\w.:\-]*")  # names, op targets, devices: never code
_TEXT_FIELDS = {"as_string", "as_strings", "in_spec", "out_spec", "torch_version"}  # passed as data


def vet_archive(path: str) -> io.BytesIO:
    """A copy of the archive that is safe to give `torch.export.load`, or Rejected.

    Node metadata (free text such as stack traces, which FX pastes into code) is
    dropped; every other string in the program must look like a name.
    """
    try:
        src = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise Rejected(f"the handed-in model is not a torch.export archive: {exc}") from exc
    out = io.BytesIO()
    with src, zipfile.ZipFile(out, "w") as dst:
        infos = src.infolist()
        if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
            raise Rejected("the handed-in model archive is larger than 16 GiB")
        roots = {info.filename.split("/", 1)[0] for info in infos}
        for info in infos:
            name = info.filename.split("/", 1)[-1]
            if len(roots) != 1 or "/" not in info.filename or not _MEMBERS.fullmatch(name):
                raise Rejected(f"the model archive holds {info.filename!r}, which a plain "
                               "torch.export.save never writes; refused")
            data = src.read(info)
            if name == "models/model.json":
                data = json.dumps(_clean(json.loads(data), "")).encode()
            elif name.endswith("_config.json"):
                _check_payloads(json.loads(data))
            dst.writestr(info.filename, data)
    out.seek(0)
    return out


def _clean(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: {} if k == "metadata" else _clean(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, key) for v in value]
    if isinstance(value, str) and key not in _TEXT_FIELDS and not _NAME.fullmatch(value):
        raise Rejected(f"the exported program holds {key} {value[:60]!r}, which is not a name; refused")
    return value


def _check_payloads(config: dict[str, Any]) -> None:
    for name, payload in config.get("config", {}).items():
        if payload.get("use_pickle") or not re.fullmatch(r"(weight|tensor)_\d+", payload.get("path_name", "")):
            raise Rejected(f"the model stores {name!r} as a pickled or custom object; refused")
