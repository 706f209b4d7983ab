"""The installed package is found from anywhere, also from the folder that holds a clone
named ``deconvviz`` (issue 13): an empty namespace package must not shadow it. The wheel and
the sdist build, carry every data file, and the wheel installed into a fresh venv projects
with its bundled checkpoint (issue 21)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest


def test_import_from_the_folder_holding_the_clone(tmp_path):
    try:
        importlib.metadata.distribution("deconvviz")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "deconvviz is not installed (pip install -e . --config-settings "
            "editable_mode=compat, as the README says)"
        )
    (tmp_path / "deconvviz").mkdir()  # what `git clone .../deconvviz` leaves here
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import deconvviz; print(deconvviz.load_model.__name__, deconvviz.__version__)"
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == "load_model"
    r = subprocess.run(
        [sys.executable, "-m", "deconvviz", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "deconvviz, version" in r.stdout, r.stderr[-2000:]


# -- the wheel and the sdist (issue 21) ------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _clean_env() -> dict:
    # Without PYTHONPATH: the checkout must not stand in for what the wheel installed.
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _package_data_files() -> set:
    """Every file of the package that is not Python: what the wheel must carry."""
    pkg = REPO / "deconvviz"
    return {
        str(p.relative_to(REPO))
        for p in pkg.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip(
        "build", reason="the build tool is not installed (the test extra brings it)"
    )
    out = tmp_path_factory.mktemp("dist")
    # Built from a copy, so the checkout gets no build/ or egg-info; without isolation, with
    # this environment's setuptools, so nothing is downloaded.
    src = tmp_path_factory.mktemp("src") / "deconvviz"
    shutil.copytree(
        REPO,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "outputs", "build", "dist", "*.egg-info", "__pycache__", "site"
        ),
    )
    r = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return wheels[0], sdists[0]


def test_version_is_said_in_one_place(dist):
    import deconvviz

    wheel, sdist = dist
    assert wheel.name == f"deconvviz-{deconvviz.__version__}-py3-none-any.whl"
    assert sdist.name == f"deconvviz-{deconvviz.__version__}.tar.gz"
    versions = re.findall(r"^## \[?(\d+\.\d+\.\d+)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert versions and versions[0] == deconvviz.__version__, versions


def test_the_wheel_and_the_sdist_carry_every_data_file(dist):
    wheel, sdist = dist
    data = _package_data_files()
    assert "deconvviz/models/_bundled/cifar_cnn.pt" in data
    assert any(f.startswith("deconvviz/render/web/static/") for f in data)
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
    missing = sorted(data - in_wheel)
    assert not missing, f"the wheel lacks {missing}: declare them in setup.cfg's package_data"
    with tarfile.open(sdist) as t:
        prefix = sdist.name[: -len(".tar.gz")] + "/"
        in_sdist = {n[len(prefix) :] for n in t.getnames()}
    missing = sorted(
        (data | {"CHANGELOG.md", "README.md", "setup.cfg", "pyproject.toml"}) - in_sdist
    )
    assert not missing, f"the sdist lacks {missing}"


def test_the_wheel_installs_and_projects_from_a_fresh_venv(dist, tmp_path):
    wheel, _ = dist
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300
    )
    py = venv / "bin" / "python"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # torch and the other requirements come from this environment (no download): its
    # site-packages is added behind the venv's own, where the wheel went (added after the
    # install, or pip would take this environment's deconvviz for the one to install).
    site_dir = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site_dir, "outer.pth").write_text("\n".join(deps) + "\n")
    env = _clean_env()
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(
        [str(venv / "bin" / "deconvviz"), "project", "--layer", "2", "--feature", "9"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    png = work / "outputs" / "layer2_feature9_max_deconvnet_switches.png"
    h5 = png.with_suffix(".h5")
    assert png.is_file() and h5.is_file(), r.stdout
    # It ran the wheel's code with the bundled checkpoint, not this checkout's.
    code = (
        "import deconvviz, h5py, sys; f = h5py.File(sys.argv[1]); "
        "print(deconvviz.__file__); print(f.attrs['checkpoint'])"
    )
    r = subprocess.run(
        [str(py), "-c", code, str(h5)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    where, checkpoint = r.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    assert "cifar_cnn.pt" in checkpoint and str(venv.resolve()) in str(
        Path(checkpoint).resolve()
    ), checkpoint
