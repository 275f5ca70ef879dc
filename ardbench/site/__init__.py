"""``ardbench site``: the leaderboard as a static, offline, byte-stable website.

Built from the same records as the markdown tables (``leaderboard/runs``), with the tables
that :func:`ardbench.results.tables.build_tables` makes of them, plus, where on file, each
run's ``log.jsonl`` (curves) and verification result. The pages use only the site's own CSS
and script and work from ``file://``; the markdown tables stay the source of truth.

html        escaping, the page frame, tables, display of record text (paths shortened)
markdown    a safe markdown subset (a table's header, a method's README)
svg         inline charts: clean-vs-robust scatter, per-epoch curves
data        records -> tables, logs, verification (the pydantic record model)
titles      a table's names in words; cost: wall time, device, throughput, memory
table_page, run_page (+ run_config, run_curves), method_page, index_page, downloads
build       every file in memory, written with a manifest (stale files removed)
"""

from __future__ import annotations

from .build import SiteReport, build_site, render_site

__all__ = ["SiteReport", "build_site", "render_site"]
