"""The browsable web report (issue 11): a static site of every layer and feature of a
report, written from its HDF5 file or streamed as a report is computed.

:mod:`.site` writes the PNGs and pages (:class:`SiteWriter`, :func:`write_site`);
:mod:`.pages` fills the HTML templates in ``templates/`` with escaped values; the
pages' stylesheet and scripts live in ``static/`` (plain CSS and JavaScript, no
framework, nothing fetched from the internet).
"""

from .site import PAGE_SIZE, SITE_DIR, SiteWriter, site_path, timestamp, write_site

__all__ = ["SITE_DIR", "PAGE_SIZE", "site_path", "SiteWriter", "write_site", "timestamp"]
