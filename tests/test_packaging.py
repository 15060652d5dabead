"""What a user installs: the sdist and the wheel carry the kernels (also from a checkout whose
symbolic links became text files), the license and a runnable test suite; a plain install
says in one line which extra a command needs; the install lines say what works."""
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from gpucnn import cuda, extras, predict, train

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "LICENSE", "README.md", "Makefile",
           "cuda_kernels", "gpucnn", "tests", "docs", "scripts"]
KERNELS = sorted(p.name for pattern in ("*.cu", "*.cuh") for p in (ROOT / "cuda_kernels").glob(pattern))


def checkout_without_symlinks(dest):
    """The tree as `git -c core.symlinks=false clone` leaves it: gpucnn/cuda_kernels is a text file."""
    dest.mkdir()
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(src, dest / name)
    link = dest / "gpucnn" / "cuda_kernels"
    link.unlink()
    link.write_text("../cuda_kernels")
    return dest


def build(source, out, what):
    """build_meta's sdist or wheel hook run in `source`, as `pip wheel` / `python -m build` run it."""
    hook = {"sdist": "build_sdist", "wheel": "build_wheel"}[what]
    pytest.importorskip("setuptools", minversion="77")
    return subprocess.run(
        [sys.executable, "-c", f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))", str(out)],
        cwd=source, capture_output=True, text=True, timeout=120)


def built(source, out, what):
    result = build(source, out, what)
    assert result.returncode == 0, result.stderr
    return out / result.stdout.split()[-1]


def test_sdist_and_wheel_carry_kernels_license_and_tests_from_a_checkout_without_symlinks(tmp_path):
    tree = checkout_without_symlinks(tmp_path / "clone")
    sdist = built(tree, tmp_path / "dist", "sdist")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        tar.extractall(tmp_path / "unpacked", filter="data")
    for needed in ["LICENSE", "tests/conftest.py", "tests/gradcheck.py", "setup.py",
                   *(f"cuda_kernels/{k}" for k in KERNELS), *(f"gpucnn/cuda_kernels/{k}" for k in KERNELS)]:
        assert needed in names, needed

    for source in (tree, tmp_path / "unpacked" / sdist.name.removesuffix(".tar.gz")):  # from the clone; from the sdist
        wheel = built(source, tmp_path / f"wheel-{source.name}", "wheel")
        with zipfile.ZipFile(wheel) as whl:
            files = whl.namelist()
            assert sorted(n.split("/")[-1] for n in files if n.startswith("gpucnn/cuda_kernels/")) == KERNELS
            for kernel in KERNELS:
                assert whl.read(f"gpucnn/cuda_kernels/{kernel}") == (ROOT / "cuda_kernels" / kernel).read_bytes()
            assert any(re.fullmatch(r"gpucnn-[^/]+\.dist-info/licenses/LICENSE", n) for n in files)


def test_a_build_without_kernels_fails_loudly(tmp_path):
    tree = checkout_without_symlinks(tmp_path / "clone")
    for kernel in (tree / "cuda_kernels").glob("*.cu"):
        kernel.unlink()
    result = build(tree, tmp_path / "dist", "wheel")
    assert result.returncode != 0 and "no CUDA kernels (*.cu) in" in result.stderr


@pytest.mark.parametrize("module, flags", [("sklearn.datasets", ["--no-plots"]), ("matplotlib", [])])
def test_a_plain_install_names_the_missing_extra_in_one_line_before_training(tmp_path, monkeypatch, capsys, module, flags):
    monkeypatch.setitem(sys.modules, module, None)  # import fails, as when it is not installed
    with pytest.raises(SystemExit) as e:
        train.main(["--out", str(tmp_path), "--epochs", "1", *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("gpucnn-train: error: ") and 'pip install -e ".[train]" in a clone of gpucnn' in err
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "checkpoints").exists()


def test_predict_without_pillow_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(extras.MissingExtra, match=r'reading images needs pillow.*pip install -e "\.\[train\]"'):
        predict.load_image(str(tmp_path / "a.png"), {"in_shape": [1, 8, 8], "max_value": 16})


def test_install_lines_and_the_cuda_hint_say_what_works():
    """gpucnn is not on PyPI: no line may tell anyone to `pip install gpucnn...` from it."""
    texts = {"README.md": (ROOT / "README.md").read_text(), "cuda.INSTALL_HINT": cuda.INSTALL_HINT}
    texts.update({f"docs/{p.name}": p.read_text() for p in (ROOT / "docs").glob("*.md")})
    for name, text in texts.items():
        assert not re.search(r"pip install [\"']?gpucnn", text), name
    assert 'pip install -e ".[cuda12]"' in cuda.INSTALL_HINT and 'pip install -e ".[cuda12]"' in texts["README.md"]
    assert 'pip install -e ".[train]"' in texts["README.md"]


def test_a_source_tree_without_symlinks_runs_its_kernels(tmp_path):
    """`pip install -e .` from a checkout without links (what `make train` does there) reads the
    kernels from the top-level cuda_kernels/ instead of the text file the link became."""
    tree = checkout_without_symlinks(tmp_path / "clone")
    probe = ("from gpucnn.backends import cuda; import sys; "
             "print(all(cuda.kernel_source(f) for f in cuda.KERNEL_FILES), sorted(cuda.KERNEL_FILES))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True") and all(k in result.stdout for k in KERNELS if k.endswith(".cu"))
