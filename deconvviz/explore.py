"""A report file, explored from Python and shown in notebooks (issue 20).

:class:`Report` opens the ``report.h5`` that ``deconvviz report`` (or
``deconvviz.report(model, data, ...)``) writes: ``report.feature(node, i)`` is what
one feature detects and its top images, ``report.features_for("dog")`` the features
that detect a class, strongest first. A report, a layer of it and a feature display
inline in Jupyter (``_repr_html_``), drawn as the web report draws them::

    import deconvviz
    rep = deconvviz.report(model, "builtin", layers=[2], top=9, out="outputs/rep")
    rep                                  # provenance and each layer's features
    rep.features_for("disc")             # [Feature(layer2 #9: disc, AUROC 0.97 ...), ...]
    rep.feature(2, 9)                    # tiles, AUROC bars, histogram

Layers are named as in the file: a layer number (``2``, or ``"layer2"``) or a graph
node name (``"layer3.1.relu_1"``); features count from 0.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import DeconvvizError
from .render.feature_stats import class_name, label_caption, statistics_html
from .render.notebook import feature_html, layer_html, report_html
from .render.web.site import feature_tiles
from .store.report_h5 import LayerReport, class_names
from .store.report_read import open_report
from .store.statistics_h5 import NO_CLASS_TEXT, FeatureStatistics, statistics_absent

__all__ = ["Report", "ReportLayer", "Feature", "NOTEBOOK_FEATURES"]

#: Features a layer shows inline (the strongest detectors first); ``layer.html(None)``
#: shows all.
NOTEBOOK_FEATURES = 48


class Feature:
    """Feature ``index`` (its channel number) of one layer of a report, in row ``row`` of
    the layer (the same unless the report keeps some features only, ``--feature``): its
    top images and what it detects.

    ``activation (k,)``, ``image_index (k,)`` and ``labels (k,)`` of its top k images;
    ``stats``: the layer's :class:`~deconvviz.store.statistics_h5.FeatureStatistics` (None
    for a report written before statistics). ``label`` is the detected class's name,
    ``"no class"``, or None without statistics; ``auroc`` maps each class to its AUROC.
    """

    def __init__(self, layer: "ReportLayer", row: int):
        self.layer, self.row = layer, int(row)
        self.index = layer.ids[self.row]
        head = layer.head
        self.activation = head.activation[row]
        self.image_index = head.image_index[row]
        self.labels = head.label[row]
        self.stats: Optional[FeatureStatistics] = head.stats

    @property
    def node(self):
        return self.layer.key

    @property
    def label(self) -> Optional[str]:
        if self.stats is None:
            return None
        c = int(self.stats.label[self.row])
        return NO_CLASS_TEXT if c < 0 else class_name(self.layer.classes, c)

    @property
    def label_auroc(self) -> float:
        return float("nan") if self.stats is None else float(self.stats.label_auroc[self.row])

    @property
    def label_p(self) -> float:
        return float("nan") if self.stats is None else float(self.stats.label_p[self.row])

    @property
    def firing_rate(self) -> float:
        return float("nan") if self.stats is None else float(self.stats.firing_rate[self.row])

    @property
    def auroc(self) -> Dict[str, float]:
        """``{class name: AUROC}`` (empty without statistics)."""
        if self.stats is None:
            return {}
        return {
            class_name(self.layer.classes, c): float(self.stats.auroc[self.row, c])
            for c in range(self.stats.classes)
        }

    @property
    def maxima(self) -> Optional[np.ndarray]:
        """Its maximum over positions on every image of the scan, ``(N,)`` float16."""
        return None if self.stats is None else self.stats.maxima[self.row]

    def tiles(self):
        """``(projections, patches)`` ``uint8 (k, rf_h, rf_w, 3)`` as the web report
        draws them."""
        with open_report(self.layer.report.path, [self.layer.name], images=False) as rep:
            proj, patch, _ = feature_tiles(rep.layers[self.layer.key], self.row)
        return proj, patch

    def describe(self) -> str:
        what = (
            "statistics absent"
            if self.stats is None
            else (
                NO_CLASS_TEXT
                if self.label == NO_CLASS_TEXT
                else f"{self.label}, AUROC {self.label_auroc:.3f}, p {self.label_p:.2g}"
            )
        )
        return f"{self.layer.name} #{self.index}: {what}"

    def __repr__(self) -> str:
        return f"Feature({self.describe()})"

    def _repr_html_(self) -> str:
        proj, patch = self.tiles()
        classes = self.layer.classes
        caps = [
            " ".join(
                [f"#{j + 1} image {int(i)}"]
                + ([class_name(classes, int(c))] if c >= 0 else [])
                + [f"act {float(a):.3g}"]
            )
            for j, (i, c, a) in enumerate(zip(self.image_index, self.labels, self.activation))
        ]
        stats = (
            statistics_html(self.stats, self.row, classes)
            if self.stats is not None
            else f"<p>{statistics_absent(self.layer.report.path, self.layer.report.version)}</p>"
        )
        return feature_html(f"{self.layer.title}, feature {self.index}", proj, patch, caps, stats)


class ReportLayer:
    """One layer of a :class:`Report`: ``features``, ``k``, ``stats`` (or None) and
    :meth:`feature`."""

    def __init__(self, report: "Report", head: LayerReport):
        self.report, self.head = report, head
        self.key, self.name, self.title = head.key, head.name, head.title
        self.features, self.k, self.stats = head.features, head.k, head.stats
        self.classes = report.classes
        #: The channel number of each row (0 .. features - 1 unless ``--feature`` chose).
        self.ids = [int(c) for c in head.feature_ids]
        self._rows = {c: r for r, c in enumerate(self.ids)}

    def feature(self, i: int) -> Feature:
        """Feature (channel) ``i``."""
        if int(i) not in self._rows:
            kept = (
                f"features 0..{self.features - 1}"
                if self.ids == list(range(self.features))
                else f"features {', '.join(map(str, self.ids))} only (--feature)"
            )
            raise DeconvvizError(f"feature {i} is out of range: {self.name} has {kept}")
        return Feature(self, self._rows[int(i)])

    def at_row(self, row: int) -> Feature:
        """The feature in row ``row`` of the layer (the rows of :attr:`stats`)."""
        return Feature(self, int(row))

    def order(self) -> List[int]:
        """Rows of the features, strongest detector first: labelled by AUROC of their
        label, then the rest by firing rate (the feature's row without statistics)."""
        if self.stats is None:
            return list(range(self.features))
        s = self.stats
        labelled = np.nan_to_num(s.label_auroc, nan=-1.0)
        return [int(f) for f in np.lexsort((np.arange(self.features), -s.firing_rate, -labelled))]

    def __repr__(self) -> str:
        n = "" if self.stats is None else f", {int((self.stats.label >= 0).sum())} detect a class"
        return f"ReportLayer({self.name}: {self.features} features, top {self.k}{n})"

    def html(self, limit: Optional[int] = NOTEBOOK_FEATURES) -> str:
        """The layer as HTML: the strongest projection and patch of its first ``limit``
        features in :meth:`order` (None: all), each captioned with its label."""
        order = self.order()
        shown = order if limit is None else order[:limit]
        cells = []
        with open_report(self.report.path, [self.name], images=False) as rep:
            lr = rep.layers[self.key]
            for f in shown:
                proj, patch, _ = feature_tiles(lr, f)
                cap = [f"feature {self.ids[f]}"]
                if self.stats is not None:
                    cap.append(label_caption(self.stats, f, self.classes))
                    cap.append(f"fires {100 * self.stats.firing_rate[f]:.0f}%")
                cells.append(([proj[0], patch[0]] if self.k else [], cap))
        lines = [repr(self)[len("ReportLayer(") : -1]]
        if limit is not None and len(order) > limit:
            lines.append(
                f"the {limit} strongest of {len(order)} features shown (layer.html(None) shows all)"
            )
        if self.stats is None:
            lines.append(statistics_absent(self.report.path, self.report.version))
        return layer_html(self.title, lines, cells)

    def _repr_html_(self) -> str:
        return self.html()


class Report:
    """A report file (``report.h5``) opened for exploring; see the module's docstring.

    ``attrs``: its provenance; ``classes``: its class names; ``layers``: ``{key:
    ReportLayer}`` (key: layer number or node name); ``version``: its format version
    (statistics exist from version 3: ``has_statistics``).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        with open_report(self.path, images=False) as rep:
            self.attrs = dict(rep.attrs)
            # Keep everything but the projections and patches (read per feature on demand).
            heads = [replace(lr, projection=None, patch=None) for lr in rep.layers.values()]
        self.version = int(self.attrs.get("format_version", 0))
        self.classes = class_names(self.attrs)
        self.layers: Dict[object, ReportLayer] = {h.key: ReportLayer(self, h) for h in heads}

    @property
    def has_statistics(self) -> bool:
        return bool(self.layers) and all(lay.stats is not None for lay in self.layers.values())

    @property
    def num_images(self) -> int:
        return int(self.attrs.get("num_images", 0))

    def layer(self, node) -> ReportLayer:
        """The layer ``node``: a layer number, ``"layer2"`` or a graph node's name."""
        for key, lay in self.layers.items():
            if node == key or str(node) == lay.name or str(node) == str(key):
                return lay
        raise DeconvvizError(
            f"report {self.path} has no layer {node!r} (it has "
            f"{', '.join(lay.name for lay in self.layers.values())})"
        )

    def feature(self, node, i: int) -> Feature:
        """Feature ``i`` of layer ``node``."""
        return self.layer(node).feature(i)

    def class_index(self, name: str) -> int:
        """The index of class ``name`` (case-insensitive); one line with the closest
        names if the report has no such class."""
        lower = [c.lower() for c in self.classes]
        if str(name).lower() in lower:
            return lower.index(str(name).lower())
        close = difflib.get_close_matches(str(name).lower(), lower, n=3, cutoff=0.5)
        hint = (
            f"; closest: {', '.join(self.classes[lower.index(c)] for c in close)}"
            if close
            else f"; its classes: {', '.join(self.classes[:20])}"
            + (" ..." if len(self.classes) > 20 else "")
        )
        raise DeconvvizError(f"{name!r} is not a class of report {self.path}{hint}")

    def require_statistics(self) -> None:
        if not self.has_statistics:
            raise DeconvvizError(statistics_absent(self.path, self.version))

    def features_for(self, class_name: str, node=None) -> List[Feature]:
        """The features (of every layer, or of ``node``) that detect ``class_name``,
        highest AUROC for it first (ties: layer order, then feature index)."""
        c = self.class_index(class_name)
        self.require_statistics()
        layers = [self.layer(node)] if node is not None else list(self.layers.values())
        found: List[Tuple[float, int, int]] = []
        for j, lay in enumerate(layers):
            s = lay.stats
            assert s is not None  # require_statistics: every layer has them
            found.extend((float(s.auroc[f, c]), j, int(f)) for f in s.detectors(c))
        found.sort(key=lambda t: (-t[0], t[1], t[2]))
        return [layers[j].at_row(f) for _, j, f in found]

    def __repr__(self) -> str:
        parts = ", ".join(f"{lay.name} ({lay.features} features)" for lay in self.layers.values())
        stats = "" if self.has_statistics else ", no statistics"
        return (
            f"Report('{self.path}': {parts}; top {self.attrs.get('top_k', '?')} of "
            f"{self.num_images} images of {self.attrs.get('data_source', '?')}{stats})"
        )

    def _repr_html_(self) -> str:
        prov = [
            ("file", str(self.path)),
            ("data", f"{self.attrs.get('data_source', '')} ({self.num_images:,} images)"),
            (
                "checkpoint",
                str(self.attrs.get("checkpoint_path", ""))
                or str(self.attrs.get("checkpoint_sha256", ""))[:16],
            ),
            ("top k", str(self.attrs.get("top_k", ""))),
            ("format version", str(self.version)),
        ]
        return report_html(
            "deconvviz report", prov, [lay.html(limit=16) for lay in self.layers.values()]
        )
