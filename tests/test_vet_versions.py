"""Vetting accepts what torch.export.save writes in every supported torch, and nothing more.

The fixtures under tests/data/ were written by tests/data/make_archive.py under each
torch version it names (2.11, 2.13, 2.14.1: supported; 2.8: refused, it pickles the
weights). Each supported layout is also tampered with, one hostile edit at a time.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from evolve.cli.run import check_torch
from evolve.errors import UserError
from evolve.harness import graph_rules
from evolve.harness.vet import SUPPORTED_TEXT, Rejected, torch_support, vet_archive

DATA = Path(__file__).resolve().parent / "data"
SUPPORTED = ["2.11", "2.13", "2.14"]
LAYOUTS = [DATA / f"export_torch{version}.pt2" for version in SUPPORTED]


def _tamper(
    path: Path,
    tmp_path: Path,
    edit: Callable[[str, bytes], bytes | None] | None = None,
    extra: dict[str, bytes] | None = None,
) -> str:
    """A copy of the archive with `edit(member, data)` applied (None drops it), plus `extra`
    (below the root folder; a name that starts with "/" or ".." is taken as it is)."""
    out = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            data = src.read(info)
            data = edit(info.filename.split("/", 1)[1], data) if edit else data
            if data is not None:
                dst.writestr(info, data)
        for name, data in (extra or {}).items():
            raw = name.startswith(("/", ".."))
            dst.writestr(zipfile.ZipInfo(name.lstrip("/") if raw else f"{root}/{name}"), data)
    return str(out)


@pytest.mark.parametrize("path", LAYOUTS, ids=SUPPORTED)
def test_each_supported_torch_archive_is_accepted_and_runs(path):
    program = graph_rules.load_model(str(path))
    idx = torch.randint(0, 64, (2, 4))
    assert program.module()(idx).shape == (2, 4, 64)
    assert program.example_inputs is None  # the pickled sample inputs never reached torch.load
    with zipfile.ZipFile(vet_archive(str(path))) as vetted:
        sample = [n for n in vetted.namelist() if n.endswith("data/sample_inputs/model.pt")]
        assert sample and vetted.read(sample[0]) == b""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_archive_is_accepted_and_runs_on_the_gpu(tmp_path):
    """Weights on the GPU are described as cuda tensors; the vetted copy loads back there."""
    model = torch.nn.Sequential(torch.nn.Embedding(64, 4), torch.nn.Linear(4, 64)).cuda().eval()
    idx = torch.randint(0, 64, (2, 4), device="cuda")
    with torch.no_grad():
        torch.export.save(torch.export.export(model, (idx,)), str(tmp_path / "model.pt2"))
        loaded = graph_rules.load_model(str(tmp_path / "model.pt2")).module()
        assert torch.allclose(loaded(idx), model(idx))


def test_torch_2_8_archive_is_refused_naming_the_supported_versions():
    """torch 2.8 writes data/weights/model.pt, a pickled state dict."""
    with pytest.raises(Rejected, match=f"pickles the weights.*{SUPPORTED_TEXT}"):
        vet_archive(str(DATA / "export_torch2.8.pt2"))


def test_pre_2_8_archive_is_refused(tmp_path):
    """torch <= 2.7 wrote a flat zip of serialized_*.pt pickles (built here, as it wrote them)."""
    path = tmp_path / "old.pt2"
    with zipfile.ZipFile(path, "w") as old:
        for name in (
            "serialized_exported_program.json",
            "serialized_state_dict.pt",
            "serialized_constants.pt",
            "serialized_example_inputs.pt",
            "version",
        ):
            old.writestr(name, b"{}")
    with pytest.raises(Rejected, match=SUPPORTED_TEXT):
        vet_archive(str(path))


HOSTILE_EXTRAS = {
    "compiled library": {"data/aotinductor/model/model.so": b"\x7fELF"},
    "extra file": {"extra/notes.txt": b"hello"},
    "unreferenced payload": {"data/weights/weight_9": b"\0" * 16},
    "second program": {"models/other.json": b"{}"},
    "path traversal": {"../escape": b"x"},
    "second root": {"/other/archive_format": b"pt2"},
}


@pytest.mark.parametrize("path", LAYOUTS, ids=SUPPORTED)
@pytest.mark.parametrize("what", HOSTILE_EXTRAS)
def test_refuses_members_torch_never_writes(path, what, tmp_path):
    with pytest.raises(Rejected, match="never writes"):
        vet_archive(_tamper(path, tmp_path, extra=HOSTILE_EXTRAS[what]))


def _replace(member: str, old: bytes, new: bytes) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if name == member:
            assert old in data, (name, old)
            return data.replace(old, new)
        return data

    return edit


WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"
HOSTILE_EDITS = {
    "pickled weight": (_replace(WEIGHTS, b'"use_pickle": false', b'"use_pickle": true'), "pickled"),
    "pickled constant": (
        _replace(CONSTANTS, b'"use_pickle": false', b'"use_pickle": true'),
        "pickled",
    ),
    "custom object constant": (
        _replace(CONSTANTS, b'"tensor_0"', b'"custom_obj_0"'),
        "pickled or custom",
    ),
    "payload outside its folder": (
        _replace(WEIGHTS, b'"weight_1"', b'"../weight_1"'),
        "not a name",
    ),
    "payload named '..'": (_replace(WEIGHTS, b'"weight_1"', b'".."'), "pickled or custom"),
    "code in a graph name": (
        _replace("models/model.json", b'"scale"', b'"scale\\")+__import__(\\"os\\").system(\\"id"'),
        "not a name",
    ),
    "code in a weight name": (_replace(WEIGHTS, b'"scale"', b'"scale;import os"'), "not a name"),
    "not pt2": (_replace("archive_format", b"pt2", b"zip"), "not pt2"),
    "long marker": (_replace("byteorder", b"little", b"little" * 20), "format marker"),
    "no weights config": (lambda name, data: None if name == WEIGHTS else data, "has no"),
    "program not JSON": (_replace("models/model.json", b"{", b"{{"), "not JSON"),
}


@pytest.mark.parametrize("path", LAYOUTS, ids=SUPPORTED)
@pytest.mark.parametrize("prefix", ["custom_obj_", "opaque_obj_"])
def test_refuses_a_constant_torch_would_unpickle(path, prefix, tmp_path):
    """torch unpickles constants named custom_obj_N / opaque_obj_N even when use_pickle is
    false: renaming the member and its config entry together must not get a pickle through."""

    def edit(name: str, data: bytes) -> bytes:
        if name == CONSTANTS:
            return data.replace(b'"tensor_0"', f'"{prefix}0"'.encode())
        return data

    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(_tamper(path, tmp_path, edit)) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename.replace("tensor_0", f"{prefix}0"), src.read(info))
    with pytest.raises(Rejected, match="pickled or custom"):
        vet_archive(str(evil))


@pytest.mark.parametrize("path", LAYOUTS, ids=SUPPORTED)
@pytest.mark.parametrize("what", HOSTILE_EDITS)
def test_refuses_hostile_edits(path, what, tmp_path):
    edit, reason = HOSTILE_EDITS[what]
    with pytest.raises(Rejected, match=reason):
        vet_archive(_tamper(path, tmp_path, edit))


def test_refuses_a_member_written_twice(tmp_path):
    path = LAYOUTS[0]
    root = zipfile.ZipFile(path).namelist()[0].split("/")[0]
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = _tamper(path, tmp_path, extra={f"/{root}/data/weights/weight_1": b"\0" * 16})
    with pytest.raises(Rejected, match="twice"):
        vet_archive(twice)


def test_refuses_what_is_not_a_zip(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(io.BytesIO(b"\x80\x04K\x01.").getvalue())
    with pytest.raises(Rejected, match="not a torch.export archive"):
        vet_archive(str(path))


def test_torch_support_names_the_supported_versions():
    for version in ("2.11.0+cu130", "2.13.0+cpu", "2.14.1"):
        assert torch_support(version) is None
    assert torch_support(torch.__version__) is None  # the torch these tests run under
    kind, why = torch_support("2.8.0+cu128")
    assert kind == "old" and SUPPORTED_TEXT in why
    assert torch_support("2.15.0")[0] == "new"
    assert torch_support("nightly")[0] == "unknown"


def test_cli_says_it_up_front(capsys):
    with pytest.raises(UserError, match="cannot be used") as raised:
        check_torch("2.7.1")
    assert SUPPORTED_TEXT in raised.value.message()
    check_torch("2.15.0")
    assert "newer than evolve was tested with" in capsys.readouterr().err
    check_torch()  # the installed torch is supported: silent
    assert capsys.readouterr().err == ""
