"""The browsable web report (issue 11): a static site of every layer and feature of a
report, written from its HDF5 file or streamed as a report is computed.

:mod:`.site` writes the PNGs and pages (:class:`SiteWriter`, :func:`write_site`);
:mod:`.index_page`, :mod:`.layer_page` and :mod:`.feature_page` fill the HTML templates in
``templates/``, with the escaping, sizes and layer summaries of :mod:`.pages`; the
pages' stylesheet and scripts live in ``static/`` (plain CSS and JavaScript, no
framework, nothing fetched from the internet).
"""

from .site import PAGE_SIZE, SITE_DIR, SiteWriter, site_path, timestamp, write_site

__all__ = ["SITE_DIR", "PAGE_SIZE", "site_path", "SiteWriter", "write_site", "timestamp"]
