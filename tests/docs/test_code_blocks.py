"""Every fenced code block of README.md and docs/**/*.md runs (issue 17 item 7, issue 21).

An example that no longer works fails here, so the documentation cannot rot. How a block
runs is said in the page itself, by an HTML comment right before the block
(``<!-- test: VERB ARGS -->``, see docs/development.md):

- ``run`` (the default): ``python`` blocks in a fresh interpreter, ``bash`` blocks through
  ``bash -e``, in a temporary folder laid out like a clone (``experiments/``, ``benchmarks/``
  linked, ``../shared`` the data beside the repository, and ``dog.jpg``, ``cat.png`` and
  ``photos/`` standing for a reader's own images);
- ``not-run "REASON"``: cannot run here (downloads, long training, several GPUs); every
  ``deconvviz`` command in it must still parse and every ``python SCRIPT`` accept its options;
- ``shrink "OLD" "NEW"``: run with OLD replaced by NEW, where NEW may only lower numbers and
  add ``--limit N``;
- ``file NAME``: write the block to NAME (for later blocks of the page), then run it;
- ``needs "PATH"``: skip, saying so, where PATH (relative to the repository) is absent;
- ``xfail "REASON"``: a known-broken example, which must fail (so the mark cannot outlive
  the bug).

``text`` blocks are listings, not code; a block without a known language fails.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
RUNNABLE = {"python", "bash"}
LANGUAGES = RUNNABLE | {"text"}
VERBS = {"run", "not-run", "shrink", "file", "needs", "xfail"}
# Options whose addition only makes a run smaller.
SHRINKING_OPTIONS = {"--limit"}
TIMEOUT = 600

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[^\s`]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*test:\s*(?P<body>.*?)\s*-->\s*$")


@dataclass
class Block:
    page: str  # path relative to the repository
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directives: List[List[str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def directive(self, verb: str) -> List[List[str]]:
        return [d[1:] for d in self.directives if d[0] == verb]


def parse_blocks(text: str, page: str) -> List[Block]:
    """The fenced blocks of a Markdown text, with the ``test:`` comments right before each."""
    lines = text.splitlines()
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = m.group("indent"), i
        body: List[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            raise ValueError(f"{page}:{start + 1}: code block is never closed")
        directives = []
        j = start - 1
        while j >= 0 and _DIRECTIVE.match(lines[j]):
            directives.insert(0, shlex.split(_DIRECTIVE.match(lines[j]).group("body")))
            j -= 1
        blocks.append(Block(page, start + 1, m.group("lang"), "\n".join(body) + "\n", directives))
        i += 1
    return blocks


def doc_pages() -> List[Path]:
    return [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))


def all_blocks() -> List[Block]:
    out = []
    for p in doc_pages():
        out += parse_blocks(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))
    return out


BLOCKS = all_blocks()
CODE_BLOCKS = [b for b in BLOCKS if b.lang in RUNNABLE]


# -- the rewrite a `shrink` may do ----------------------------------------------------------


def _numbers(token: str) -> Tuple[str, List[int]]:
    return re.sub(r"\d+", "#", token), [int(n) for n in re.findall(r"\d+", token)]


def check_shrink(old: str, new: str) -> None:
    """Raise ValueError unless ``new`` is ``old`` with numbers lowered and ``--limit N`` added."""
    o, n = old.split(), new.split()
    kept = []
    k = 0
    while k < len(n):
        if (
            n[k] in SHRINKING_OPTIONS
            and k + 1 < len(n)
            and n[k + 1].isdigit()
            and (len(kept) >= len(o) or n[k] != o[len(kept)])
        ):
            k += 2
            continue
        kept.append(n[k])
        k += 1
    if len(kept) != len(o):
        raise ValueError(f"shrink {old!r} -> {new!r} changes more than sizes")
    for a, b in zip(o, kept):
        (sa, na), (sb, nb) = _numbers(a), _numbers(b)
        if sa != sb or any(y > x for x, y in zip(na, nb)):
            raise ValueError(f"shrink {old!r} -> {new!r}: {b!r} is not a smaller {a!r}")


def rewritten(block: Block) -> str:
    code = block.code
    for args in block.directive("shrink"):
        assert len(args) == 2, f"{block.id}: shrink takes OLD and NEW"
        old, new = args
        check_shrink(old, new)
        assert old in code, f"{block.id}: shrink: {old!r} is not in the block"
        code = code.replace(old, new)
    return code


# -- the commands of a block that is not run -------------------------------------------------


def command_lines(code: str) -> List[List[str]]:
    """Each shell command of ``code`` as tokens (continuations joined, comments and ``&&``
    split)."""
    joined = re.sub(r"\\\n", " ", code)
    out = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        cmd: List[str] = []
        for t in tokens + ["&&"]:
            if t in ("&&", "||", ";"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(t)
    return out


def _long_options(tokens: List[str]) -> List[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--")]


def check_parses(cmd: List[str]) -> Optional[str]:
    """Check what can be checked without running ``cmd``; return what was checked."""
    if "deconvviz" in cmd:
        from deconvviz.cli import main

        rest = cmd[cmd.index("deconvviz") + 1 :]
        assert rest and rest[0] in main.commands, f"no deconvviz command {rest[:1]}"
        sub = main.commands[rest[0]]
        known = {"--help"}
        for p in sub.params:
            known.update(o for o in p.opts + p.secondary_opts if o.startswith("--"))
        unknown = [o for o in _long_options(rest[1:]) if o not in known]
        assert not unknown, f"deconvviz {rest[0]} has no option {unknown}"
        return f"deconvviz {rest[0]}"
    if cmd[0] == "python" and len(cmd) > 1 and cmd[1].endswith(".py"):
        script = REPO / cmd[1]
        assert script.is_file(), f"no script {cmd[1]}"
        if not _long_options(cmd[2:]):
            return cmd[1]
        r = subprocess.run(
            [sys.executable, str(script), "--help"],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        unknown = [o for o in _long_options(cmd[2:]) if o not in r.stdout]
        assert not unknown, f"{cmd[1]} --help names no {unknown}"
        return cmd[1]
    return None


# Outside tools a block may name: installers, the suite, the site and the linters.
OUTSIDE_TOOLS = {"pip", "mkdocs", "ruff", "mypy", "pre-commit"}


def _outside_tool(cmd: List[str]) -> bool:
    if cmd[0] == "python" and cmd[1:2] == ["-m"]:
        return len(cmd) > 2 and cmd[2] in OUTSIDE_TOOLS | {"pytest", "build"}
    return cmd[0] in OUTSIDE_TOOLS


# -- running ----------------------------------------------------------------------------------


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["MPLBACKEND"] = "Agg"
    return env


def _clone_like(tmp: Path) -> Path:
    """A folder laid out as a clone beside the shared data, with the reader's own images."""
    import numpy as np
    from PIL import Image

    clone = tmp / "clone"
    clone.mkdir()
    for name in ("experiments", "benchmarks"):
        (clone / name).symlink_to(REPO / name)
    if SHARED.exists():
        (tmp / "shared").symlink_to(SHARED.resolve())
    rng = np.random.default_rng(0)
    pictures = [clone / "dog.jpg", clone / "cat.png"] + [
        clone / "photos" / f"photo{i}.jpg" for i in range(4)
    ]
    (clone / "photos").mkdir()
    for p in pictures:
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(p)
    # `deconvviz` and `python` of the blocks are this interpreter and this checkout.
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, args in (("deconvviz", "-m deconvviz"), ("python", "")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args} "$@"\n')
        shim.chmod(0o755)
    return clone


def run_block(block: Block, tmp: Path) -> subprocess.CompletedProcess:
    clone = _clone_like(tmp)
    for earlier in BLOCKS:
        if earlier.page == block.page and earlier.line < block.line:
            for (name,) in earlier.directive("file"):
                (clone / name).write_text(earlier.code)
    code = rewritten(block)
    env = _env()
    env["PATH"] = f"{tmp / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if block.lang == "python":
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
    return subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("block", CODE_BLOCKS, ids=[b.id for b in CODE_BLOCKS])
def test_code_block_runs(block, tmp_path):
    for (path,) in block.directive("needs"):
        if not (REPO / path).exists():
            pytest.skip(f"{block.id} needs {path}, which is absent here")
    if "../shared" in block.code and not SHARED.exists():
        pytest.skip(f"{block.id} reads ../shared (the data beside the repository), absent here")
    not_run = block.directive("not-run")
    if not_run:
        assert not_run[0] and not_run[0][0].strip(), f"{block.id}: not-run needs a reason"
        for cmd in command_lines(block.code):
            # Ours are checked against the CLI; others must be a known outside tool.
            assert check_parses(cmd) or _outside_tool(cmd), f"{block.id}: cannot check {cmd}"
        return
    r = run_block(block, tmp_path)
    out = (
        f"{block.id} exited {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n"
        f"{r.stderr[-3000:]}"
    )
    xfail = block.directive("xfail")
    if xfail:
        assert r.returncode != 0, (
            f"{block.id} is marked xfail ({xfail[0][0]}) but runs now: remove the mark"
        )
        pytest.xfail(xfail[0][0])
    assert r.returncode == 0, out


def test_every_block_names_a_known_language_and_directive():
    bad = [f"{b.id}: ```{b.lang}" for b in BLOCKS if b.lang not in LANGUAGES]
    bad += [
        f"{b.id}: test: {' '.join(d)}"
        for b in BLOCKS
        for d in b.directives
        if not d or d[0] not in VERBS
    ]
    assert not bad, (
        "blocks need a language of "
        + ", ".join(sorted(LANGUAGES))
        + " and directives of "
        + ", ".join(sorted(VERBS))
        + ":\n"
        + "\n".join(bad)
    )


def test_readme_commands_are_what_ci_runs():
    readme = [b for b in BLOCKS if b.page == "README.md" and b.lang == "bash"]
    install, tests = readme[0].code.strip(), readme[1].code.strip()
    assert install == (
        "python -m pip install -e . --config-settings editable_mode=compat && "
        "deconvviz project --layer 2 --feature 9"
    )
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci, f".ci/run does not run the README's test command {tests!r}"


def test_the_pages_have_code_to_run():
    # The collection itself can fail: a parser that found nothing would pass every page.
    pages = {b.page for b in CODE_BLOCKS}
    assert "README.md" in pages and "docs/python-api.md" in pages
    assert len(CODE_BLOCKS) >= 20


def test_parser_reads_indented_fences_and_directives():
    text = (
        '1. a step\n\n   <!-- test: not-run "two GPUs" -->\n   ```bash\n'
        "   torchrun x \\\n       --y 1\n   ```\n\n```text\nfree\n```\n"
    )
    a, b = parse_blocks(text, "p.md")
    assert (a.lang, a.line, a.code) == ("bash", 4, "torchrun x \\\n    --y 1\n")
    assert a.directives == [["not-run", "two GPUs"]] and b.directives == []
    with pytest.raises(ValueError, match="never closed"):
        parse_blocks("```bash\nx\n", "p.md")


@pytest.mark.parametrize(
    "old,new",
    [
        ("--limit 2000", "--limit 64"),
        ("--out o", "--limit 64 --out o"),
        ("--top 16 --out o", "--top 16 --limit 200 --out o"),
        ("--epochs 30 --size 8x8", "--epochs 1 --size 4x4"),
    ],
)
def test_shrink_accepts_smaller_sizes(old, new):
    check_shrink(old, new)


@pytest.mark.parametrize(
    "old,new",
    [
        ("--limit 64", "--limit 640"),  # larger
        ("--data big", "--data small"),  # another source
        ("--out o", "--out o --rule guided"),  # another option
        ("--layer 2 --out o", "--out o"),  # an option dropped
    ],
)
def test_shrink_refuses_anything_else(old, new):
    with pytest.raises(ValueError):
        check_shrink(old, new)


def test_not_run_commands_are_checked_against_the_cli():
    assert (
        check_parses(["deconvviz", "train", "--epochs", "30", "--save-epochs", "1,2"])
        == "deconvviz train"
    )
    with pytest.raises(AssertionError, match="no option"):
        check_parses(["deconvviz", "train", "--epoch", "30"])
    with pytest.raises(AssertionError, match="no deconvviz command"):
        check_parses(["deconvviz", "trian"])
    assert command_lines(
        "torchrun --a 1 --no-python deconvviz report \\\n  --out o  # c\n"
        "pip install x && python -m pytest -q\n"
    ) == [
        ["torchrun", "--a", "1", "--no-python", "deconvviz", "report", "--out", "o"],
        ["pip", "install", "x"],
        ["python", "-m", "pytest", "-q"],
    ]
