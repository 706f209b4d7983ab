"""``deconvviz --help`` and every ``deconvviz CMD --help`` start without importing torch,
and the group's help describes the tool as it is."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from click.testing import CliRunner
from deconvviz.cli import main
out = {}
for args in [["--help"]] + [[name, "--help"] for name in sorted(main.commands)]:
    r = CliRunner().invoke(main, args)
    out[" ".join(args)] = [r.exit_code, r.output]
heavy = sorted(m for m in ("torch", "torchvision", "h5py", "PIL", "matplotlib") if m in sys.modules)
print(json.dumps({"runs": out, "heavy": heavy}))
"""


def test_help_imports_no_torch_and_describes_the_tool():
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    runs = result["runs"]
    assert len(runs) >= 10 and all(code == 0 for code, _ in runs.values()), runs
    text = " ".join(runs["--help"][1].split())
    assert "CIFAR-10 CNN" not in text
    for phrase in (
        "any classification model of torchvision",
        "your own code",
        "--model package.module:function",
        "web report (--html)",
        "the paper's figures",
        "'layers' lists what can be projected",
    ):
        assert phrase in text, phrase
    for name in ("report", "project", "layers", "occlusion", "filters", "render"):
        assert name in runs["--help"][1]
        assert "Usage: " in runs[f"{name} --help"][1]
    assert "[deconvnet|guided|gradient]" in runs["project --help"][1]
