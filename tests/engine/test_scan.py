"""The fast scan: batch size chosen for the model, buffers reused, the threshold merge
equal to the general exact merge (ties included), and the default memory format's values."""

import copy

import pytest
import torch
import torchvision

from deconvviz.data.builtin import BUILTIN_CLASSES, synthetic_images
from deconvviz.data.source import ImageSource
from deconvviz.engine.net.execute import execute
from deconvviz.engine.net.layers import get_layer
from deconvviz.engine.scan import scan_batch_size, scan_topk
from deconvviz.engine.topk import StreamingTopK, TopK, empty_topk, merge_topk
from deconvviz.errors import DeconvvizError
from deconvviz.models.architectures import CifarCNN


def _source(images, labels):
    return ImageSource(
        description="gen",
        kind="builtin",
        split="test",
        labels=labels,
        class_names=BUILTIN_CLASSES,
        images=images,
    )


def test_batch_size_is_chosen_for_the_model_and_image_size():
    assert scan_batch_size(CifarCNN(), (32, 32)) == 128  # conv 1: 32x32x32 floats
    assert scan_batch_size(CifarCNN(), (32, 32), budget=10**12) == 512
    with torch.device("meta"):
        vgg = torchvision.models.vgg16()
    assert scan_batch_size(vgg, (224, 224)) == 1  # conv 1: 64x224x224 floats
    assert scan_batch_size(vgg.double(), (112, 112)) == 2


def _merge_all(batches, k):
    """The reference: one general merge of every candidate (two stable sorts)."""
    top = empty_topk(batches[0][0].shape[1], k)
    for out, offset in batches:
        val, where = out.flatten(2).max(dim=2)
        n, c = val.shape
        w = out.shape[-1]
        pos = torch.stack([where // w, where % w], dim=-1).transpose(0, 1)
        cand = TopK(val.t().float(), torch.arange(offset, offset + n).expand(c, n), pos)
        top = merge_topk(top, cand, k)
    return top


@pytest.mark.parametrize("channels_last", [False, True])
def test_threshold_merge_equals_the_general_merge_with_ties(channels_last):
    info = get_layer(CifarCNN(), 1)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for b in range(6):
        # Few distinct values, so ties abound: within a batch, across batches, in a plane.
        out = torch.randint(0, 4, (7, 5, 3, 3), generator=gen).float()
        if b == 2:
            out = out[:2]  # a short batch (fewer images than k)
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        batches.append(out)
    offsets = [0, 7, 14, 16, 23, 30]
    for k in (1, 4, 9):
        fast = StreamingTopK(empty_topk(5, k))
        for out, offset in zip(batches, offsets):
            fast.add(out, offset, info)
        want = _merge_all(list(zip(batches, offsets)), k)
        assert torch.equal(fast.top.image_index, want.image_index)
        assert torch.equal(fast.top.position, want.position)
        assert torch.equal(fast.top.activation, want.activation)
        # Candidates that arrive out of order take the general merge and agree too.
        back = StreamingTopK(empty_topk(5, k))
        for out, offset in reversed(list(zip(batches, offsets))):
            back.add(out, offset, info)
        assert torch.equal(back.top.image_index, want.image_index)
        assert torch.equal(back.top.position, want.position)


def test_scan_reuses_one_read_buffer_and_agrees_with_float64(monkeypatch):
    images, labels = synthetic_images(50, seed=3)
    src = _source(images, labels)
    buffers = []
    real_read = ImageSource.read

    def spy(self, start, stop, out=None):
        buffers.append(None if out is None else out.data_ptr())
        got = real_read(self, start, stop, out=out)
        assert torch.equal(got, images[start:stop])
        return got

    monkeypatch.setattr(ImageSource, "read", spy)
    torch.manual_seed(0)
    model = CifarCNN(hidden=8)
    model.meta = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    tops = scan_topk(model, src, [1, 2], k=3, batch_size=16)
    # One buffer per batch running at once (one per CPU thread), each refilled.
    assert len(buffers) == 4 and None not in buffers
    assert len(set(buffers)) <= min(2, torch.get_num_threads())
    # The same scan in float64, one batch: same images, same positions.
    ref = scan_topk(model.double(), src, [1, 2], k=3, batch_size=50)
    for L in (1, 2):
        assert torch.equal(tops[L].image_index, ref[L].image_index)
        assert torch.equal(tops[L].position, ref[L].position)
        torch.testing.assert_close(tops[L].activation, ref[L].activation, rtol=1e-5, atol=1e-5)


def test_read_into_a_buffer_checks_it():
    images, labels = synthetic_images(4, seed=3)
    src = _source(images, labels)
    buf = torch.zeros((3, 3, 32, 32), dtype=torch.uint8)
    got = src.read(1, 4, out=buf)
    assert got.data_ptr() == buf.data_ptr() and torch.equal(got, images[1:4])
    with pytest.raises(ValueError, match="read buffer"):
        src.read(0, 4, out=buf)


class _SharedConv(torch.nn.Module):
    """A conv whose output feeds a ReLU *and* a later add: the ReLU must not overwrite it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv(x)
        a = torch.relu(y)
        z = self.relu(self.conv2(a))
        return z + y


@pytest.mark.parametrize("name", ["shared", "resnet18"])
def test_a_scan_overwriting_values_gives_the_networks_outputs(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    from deconvviz.engine.net.graph import build_graph, eval_mode

    torch.manual_seed(0)
    model = _SharedConv() if name == "shared" else torchvision.models.resnet18()
    graph = build_graph(model, (32, 32), 3)
    names = [n.name for n in graph.listed() if n.shape is not None and n.op != "input"]
    x = torch.randn(2, 3, 32, 32)
    seen = {}

    def visit(node, value, _kept):
        seen[node.name] = value.clone()  # as made, before any later op overwrites it

    with eval_mode(model), torch.inference_mode():
        # only the last node is a target: every other value may be overwritten once seen
        got = execute(graph, x.clone(), names[-1:], visit=visit, reuse=True)
        # the network's own forward, every ReLU out of place so each node keeps its value
        plain = copy.deepcopy(model)
        for m in plain.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
        want = create_feature_extractor(plain, names)(x)
    torch.testing.assert_close(got[names[-1]], want[names[-1]], rtol=1e-5, atol=1e-5)
    for n in names:
        if n not in seen:
            # a conv run with its batch norm folded in: only the norm's value is made
            users = list(graph.node(n).fx_node.users)
            assert graph.node(n).op == "conv" and len(users) == 1, n
            assert graph.node_of(users[0]).op == "batchnorm", n
            continue
        torch.testing.assert_close(seen[n], want[n], rtol=1e-5, atol=1e-5, msg=n)
    assert len(seen) > len(names) // 2


def test_a_scan_on_lanes_equals_the_scan_on_one_thread():
    """Batches run side by side on one thread each (one lane per CPU thread): the same
    top-k, positions and per-image maxima as one thread running every batch in turn."""
    from deconvviz.engine.statistics import MaximaRecorder

    images, labels = synthetic_images(90, seed=5)
    images[40:50] = images[10:20]  # repeated images: equal activations to break by index
    src = _source(images, labels)
    torch.manual_seed(1)
    model = CifarCNN(hidden=8)
    model.meta = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    threads = torch.get_num_threads()
    got = {}
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            rec = {L: MaximaRecorder(n, len(src)) for L, n in ((1, 32), (2, 64))}
            got[t] = (scan_topk(model, src, [1, 2], k=12, batch_size=8, maxima=rec), rec)
            assert torch.get_num_threads() == t  # the caller's thread count is kept
    finally:
        torch.set_num_threads(threads)
    for L in (1, 2):
        one, two = got[1][0][L], got[2][0][L]
        assert torch.equal(one.activation, two.activation)
        assert torch.equal(one.image_index, two.image_index)
        assert torch.equal(one.position, two.position)
        assert torch.equal(got[1][1][L].values, got[2][1][L].values)
    # the ties: an image and its copy rank by index, the copy after the original
    top = got[2][0][1]
    for f in range(top.activation.shape[0]):
        idx = top.image_index[f].tolist()
        for j, i in enumerate(idx):
            if 40 <= i < 50:
                assert i - 30 in idx[:j], (f, idx)


class _Overflow(torch.nn.Module):
    """One conv whose huge weights turn any non-black pixel into +inf."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1, bias=False)
        torch.nn.init.constant_(self.conv.weight, 3e38)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


def test_non_finite_activations_name_the_first_bad_batch():
    """Batches 2 and 3 of 8 overflow, one on each of two lanes; whichever lane meets its
    bad batch first, the error names batch 2, as one batch after another would."""
    images = torch.zeros((32, 3, 32, 32), dtype=torch.uint8)
    images[9, :, 5:8, 5:8] = 255  # batch 2 (images 8..11), the second of lane 0
    images[13, :, 7:10, 7:10] = 255  # batch 3 (images 12..15), the second of lane 1
    src = _source(images, torch.zeros(32, dtype=torch.long))
    model = _Overflow()
    model.meta = {"normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}}
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            with pytest.raises(DeconvvizError) as err:
                scan_topk(model, src, ["relu"], k=2, batch_size=4)
            assert "gives non-finite activations on images 8..11;" in str(err.value)
            assert str(err.value).endswith("the checkpoint or the data is damaged")
            assert torch.get_num_threads() == t
    finally:
        torch.set_num_threads(threads)


class _Tails(torch.nn.Module):
    """Layers whose ends pass each channel's maximum on (a ReLU, a ReLU6, a pool covering
    its map) and one that does not (a pool that leaves two rows out)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.pool1 = torch.nn.MaxPool2d(3, 2, padding=1)  # 32 -> 16, every row covered
        self.conv2 = torch.nn.Conv2d(6, 8, 3)  # 16 -> 14
        self.pool2 = torch.nn.MaxPool2d(3, 3)  # 14 -> 4: rows 12 and 13 in no window
        self.conv3 = torch.nn.Conv2d(8, 5, 1)

    def forward(self, x):
        a = self.pool1(torch.relu(self.conv1(x)))
        b = torch.nn.functional.relu6(self.conv2(a))
        return torch.nn.functional.relu(self.conv3(self.pool2(b)))


def _brute_topk(model, images, node, k):
    """Each feature's top k of ``node``'s map: (activation, image, first row-major position),
    ranked by activation, then image index, from the network's own forward pass."""
    from torchvision.models.feature_extraction import create_feature_extractor

    out = create_feature_extractor(model, [node])(images)[node]  # (N, F, h, w)
    n, f, h, w = out.shape
    val, where = out.reshape(n, f, h * w).max(dim=2)  # first maximum
    order = torch.argsort(-val.t(), dim=1, stable=True)[:, :k]  # ties to the lower index
    act = val.t().gather(1, order)
    pos = where.t().gather(1, order)
    return act, order, torch.stack([pos // w, pos % w], dim=-1)


@pytest.mark.parametrize("node", ["pool1", "relu6", "pool2", "relu_1"])
def test_a_layer_scanned_before_its_relus_and_pools_gives_its_own_maxima(node):
    """The scan takes a layer's maxima before its last ReLUs and covering pools and runs
    them only where it needs a position: the top k, positions and maxima are the layer's
    own (float64, against the network's forward pass)."""
    from deconvviz.engine.net.graph import build_graph
    from deconvviz.engine.statistics import MaximaRecorder
    from deconvviz.engine.topk import MaxTail

    torch.manual_seed(3)
    model = _Tails().double().eval()
    model.meta = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    images, labels = synthetic_images(40, seed=7)
    src = _source(images, labels)
    graph = build_graph(model, (32, 32), 3)
    source, tail = MaxTail.of(graph, node, set())
    expect = {"pool1": "conv1", "relu6": "conv2", "pool2": "pool2", "relu_1": "conv3"}
    assert source == expect[node]  # the uncovered pool is scanned as it is
    assert (tail is None) == (node == "pool2")
    features = graph.node(node).shape[0]
    rec = {node: MaximaRecorder(features, len(src))}
    top = scan_topk(model, src, [node], k=6, batch_size=8, maxima=rec)[node]
    x = (images.double() / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        act, idx, pos = _brute_topk(model, x, node, 6)
        from torchvision.models.feature_extraction import create_feature_extractor

        out = create_feature_extractor(model, [node])(x)[node]
    assert torch.equal(top.image_index, idx)
    assert torch.equal(top.position, pos)
    torch.testing.assert_close(top.activation, act.float(), rtol=1e-6, atol=0)
    want = out.amax(dim=(2, 3)).t().float().to(torch.float16)  # as the scan rounds
    assert torch.equal(rec[node].values, want)
