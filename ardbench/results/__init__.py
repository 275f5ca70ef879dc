"""Run records, leaderboard tables, comparisons and later evaluations.

schema      the record (version 2) as pydantic models: the typed ``Record`` records load as
fields      the schema's leaf types (strict, errors in the record's words)
validate    a dict against the schema (RecordError naming the field), version upgrades
provenance  code version (dirty, the method's source hash), libraries, hardware
records     build, write, load (typed), find records
grouping    table_key, row_key / row_identity and table_relpath: which table and row a record
            is in, and the table's file name (the hashes: ardbench.protocols.identity)
tables      records -> frame -> rows (mean ± std over seeds) -> sorted tables
render      markdown of a table and of the index (record text escaped)
leaderboard collect, write, --check, --add
later_eval  --attach: columns a record lacks, from a later evaluation of its checkpoint
compare     a run or a method against its table
tidy        records -> one tidy pandas row per run (the Python API's ``ardbench.results``)

Calling the package, ``ardbench.results(path)``, is :func:`ardbench.api.results`: a DataFrame
with one row per run.
"""

from __future__ import annotations

from .._callable import make_callable

# `ardbench.results` is both this package and the API function: the package is made callable
# (see ardbench/_callable.py for why a plain function of that name would not survive imports)
make_callable(__name__, "results")
