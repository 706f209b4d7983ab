"""Networks the deconvnet cannot project through yet are explained, not hidden: ``layers``
lists every node with whether it can be projected or the first op on the way back that
has no rule; ``project`` and ``report`` refuse in one line naming that node and op."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from deconvviz.cli import main
from deconvviz.engine.net.graph import RULE_OPS, build_graph

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class TwoBranches(nn.Module):
        """conv1 -> relu -> [conv2 -> act(Softmax) -> conv3] + [conv4 -> gate(Softmin)] -> relu2
        -> gelu(LogSoftmax) -> conv5: what each node goes back through is known by hand."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.Softmax(dim=1)
            self.conv3 = nn.Conv2d(4, 4, 1)
            self.conv4 = nn.Conv2d(4, 4, 1)
            self.gate = nn.Softmin(dim=1)
            self.relu2 = nn.ReLU()
            self.gelu = nn.LogSoftmax(dim=1)
            self.conv5 = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            x = self.relu(self.conv1(x))
            a = self.conv3(self.act(self.conv2(x)))
            b = self.gate(self.conv4(x))
            return self.conv5(self.gelu(self.relu2(a + b)))

    def make():
        torch.manual_seed(0)
        return TwoBranches()

    class SoftmaxFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.Softmax(dim=1)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):   # every node goes back through the softmax
            return self.head(self.conv(self.act(x)))

    def softmax_first():
        return SoftmaxFirst()
''')

MODEL = ("--image-size", "16")

#: node -> the node whose op blocks it (None: projectable), worked out by hand from the
#: forward: an op without a rule blocks itself; through the add, the one run last wins.
BLOCKERS = {
    "conv1": None,
    "relu": None,
    "conv2": None,
    "act": "act",
    "conv3": "act",
    "conv4": None,
    "gate": "gate",
    "add": "gate",
    "relu2": "gate",
    "gelu": "gelu",
    "conv5": "gelu",
}
OPS = {"act": "Softmax", "gate": "Softmin", "gelu": "LogSoftmax"}


@pytest.fixture
def nets(user_module):
    user_module("blocknets", NET)
    return "blocknets:make"


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_blocker_is_the_first_op_without_a_rule_on_the_way_back(nets):
    import blocknets

    graph = build_graph(blocknets.make(), (16, 16))
    got = {
        n.name: (graph.blocker(n.name).name if graph.blocker(n.name) else None)
        for n in graph.nodes
        if n.name != "x"
    }
    assert got == BLOCKERS
    for name, block in BLOCKERS.items():
        if block is None:
            assert graph.why_not(name) == "" and graph.check_seed(name).name == name
        elif block == name:
            assert graph.why_not(name) == (
                f"node '{name}' ({OPS[name]}) has no deconvnet rule (rules exist for: {RULE_OPS})"
            )
            assert graph.why_not(name, short=True) == f"no rule for {OPS[name]}"
        else:
            assert graph.why_not(name) == (
                f"node '{block}' ({OPS[block]}) has no deconvnet rule, so '{name}' cannot be "
                f"projected through it (rules exist for: {RULE_OPS})"
            )
            assert (
                graph.why_not(name, short=True)
                == f"no rule for {OPS[block]} at {block} on the way back"
            )


def test_layers_lists_every_node_and_why_it_cannot_be_projected(nets):
    res = _run("layers", "--model", nets, *MODEL)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == [
        "node",
        "op",
        "features",
        "output",
        "receptive",
        "field",
        "projectable",
    ]
    rows = {line.split()[0]: line for line in lines[1:-2]}
    assert list(rows) == list(BLOCKERS)  # every visible node: convs, ReLUs, the add, the rest
    for name, block in BLOCKERS.items():
        column = rows[name][lines[0].index("projectable") :]
        if block is None:
            assert column == "yes"
        elif block == name:
            assert column == f"no: no rule for {OPS[name]}"
        else:
            assert column == f"no: no rule for {OPS[block]} at {block} on the way back"
    assert rows["conv1"].split()[1:6] == ["Conv2d", "4", "16x16", "3x3", "(stride"]
    assert rows["act"].split()[1:5] == ["Softmax", "4", "16x16", "-"]  # no field, no rule
    assert lines[-1] == (
        "7 of the 11 nodes listed cannot be projected yet: the deconvnet has "
        "no rule for LogSoftmax, Softmax, Softmin"
    )
    every = _run("layers", "--model", nets, *MODEL, "--all")
    assert every.exit_code == 0
    assert [line.split()[0] for line in every.output.splitlines()[1:-2]] == ["x"] + list(BLOCKERS)
    assert every.output.splitlines()[1].endswith("no: the input image")


def test_project_and_report_refuse_in_one_line(nets, tmp_path):
    rules = f"(rules exist for: {RULE_OPS})"
    res = _run(
        "project",
        "--model",
        nets,
        *MODEL,
        "--layer",
        "conv3",
        "--feature",
        "0",
        "--out",
        tmp_path / "p",
    )
    assert res.exit_code == 1, res.output
    assert res.output.splitlines() == [
        f"Error: node 'act' (Softmax) has no deconvnet rule, so 'conv3' cannot be projected "
        f"through it {rules}"
    ]
    assert not (tmp_path / "p").exists()
    res = _run("report", "--model", nets, *MODEL, "--layer", "add", "--out", tmp_path / "r")
    assert res.exit_code == 1, res.output
    assert res.output.splitlines() == [
        f"Error: node 'gate' (Softmin) has no deconvnet rule, so 'add' cannot be projected "
        f"through it {rules}"
    ]
    # With no --layer, a network none of whose listed nodes can be projected names the op
    # nearest the image that they go back to.
    res = _run("report", "--model", "blocknets:softmax_first", *MODEL, "--out", tmp_path / "s")
    assert res.exit_code == 1, res.output
    assert res.output.splitlines() == [
        f"Error: SoftmaxFirst has no node to project (see 'deconvviz layers'): node 'act' "
        f"(Softmax) has no deconvnet rule {rules}"
    ]


def test_efficientnet_is_listed_and_projectable():
    """The network of the issue (an empty table before, then every node with its reason):
    every node is listed with its op, and every one can be projected (issue 19's rules)."""
    res = _run("layers", "--model", "torchvision:efficientnet_b0", "--image-size", "64")
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if not line.startswith("deconvviz:")]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert all(row.endswith("  yes") for row in rows.values()), res.output
    assert (
        rows["features.0"].split()[1] == "Conv2dNormActivation"
        or rows["features.0"].split()[1] == "SiLU"
    )
    assert rows["features.1.0.block.1"].split()[1:3] == ["SqueezeExcitation", "32"]
    assert rows["features.2.1.add"].split()[1] == "operator.add"
    assert lines[-1] == "features count from 0; give --layer a node name; --all lists every node"
