"""The site's own stylesheet and script (no CDN, no library: the pages work from ``file://``).

The script does two things: sort a table by a clicked header (``th[data-kind]``; a cell's
``data-v`` is its sort value, an empty one sorts last either way; ``aria-sort`` says the
direction), and filter the index's tables by the ``select[data-filter]`` menus (a row matches
when its ``data-<key>`` list, ``|``-separated, holds the chosen value).
"""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """\
:root { --fg: #1d232b; --muted: #5b6673; --line: #d8dde3; --bg: #ffffff; --soft: #f4f6f8;
  --accent: #1f5fa8; --warn: #9a5b00; --bad: #b3261e; --good: #1b7a3a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 "Liberation Sans", Arial, Helvetica, sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; gap: 24px; align-items: baseline; padding: 10px 24px;
  border-bottom: 1px solid var(--line); background: var(--soft); }
header .brand { font-weight: bold; font-size: 17px; color: var(--fg); text-decoration: none; }
header nav a { margin-right: 16px; color: var(--accent); text-decoration: none; }
header nav a.active { font-weight: bold; color: var(--fg); }
main { padding: 12px 24px 32px; max-width: 1600px; }
footer { padding: 12px 24px; color: var(--muted); font-size: 12px;
  border-top: 1px solid var(--line); }
h1 { font-size: 22px; margin: 10px 0 6px; }
h2 { font-size: 17px; margin: 22px 0 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 4px; }
a { color: var(--accent); }
code { font: 12.5px "Liberation Mono", Menlo, monospace; background: var(--soft);
  padding: 0 3px; border-radius: 3px; overflow-wrap: break-word; }
pre { background: var(--soft); padding: 8px; overflow-x: auto; font-size: 12.5px; }
p.lead { color: var(--muted); max-width: 1000px; margin: 4px 0 10px; }
.explain { background: #f0f5fb; border-left: 3px solid var(--accent); padding: 8px 12px;
  margin: 10px 0; max-width: 1100px; }
.explain p { margin: 4px 0; }
.scroll { overflow-x: auto; margin: 8px 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left;
  vertical-align: top; }
thead th { background: var(--soft); position: sticky; top: 0; font-weight: bold;
  border-bottom: 2px solid var(--line); vertical-align: bottom; white-space: nowrap; }
svg { max-width: 100%; height: auto; }
td.notes { min-width: 440px; font-size: 12px; color: var(--muted); }
th.num, td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.sortable th[data-kind] { cursor: pointer; }
table.sortable th[data-kind]::after { content: " \\2195"; color: #9aa4ae; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--fg); }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--fg); }
tbody tr:hover { background: #fafbfc; }
td.std { color: var(--muted); }
td.key { font-weight: bold; }
.pm { color: var(--muted); font-size: 12px; }
.sub { color: var(--muted); font-size: 12px; display: block; font-weight: normal; }
.tag { display: inline-block; padding: 0 5px; border-radius: 3px; font-size: 11.5px;
  background: var(--soft); border: 1px solid var(--line); color: var(--muted); }
.tag.retired, .tag.failed { color: var(--bad); border-color: var(--bad); }
.tag.verified { color: var(--good); border-color: var(--good); }
.tag.unverified { color: var(--warn); border-color: #d9b26f; }
.tag.paper { color: var(--fg); }
table.kv th { text-align: left; font-weight: normal; color: var(--muted); white-space: nowrap;
  background: none; position: static; border-bottom: 1px solid var(--line); }
table.kv td { overflow-wrap: anywhere; }
.filters { display: flex; flex-wrap: wrap; gap: 12px; align-items: end; margin: 8px 0; }
.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
.filters select { font-size: 13px; padding: 2px; min-width: 130px; }
#filter-count { color: var(--muted); font-size: 13px; }
figure { margin: 8px 0; }
figcaption { color: var(--muted); font-size: 12px; max-width: 900px; }
svg text { font-family: "Liberation Sans", Arial, sans-serif; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; }
.cols > div { flex: 1 1 420px; min-width: 0; }
.changed td { background: #fff7e6; }
.md table { margin: 6px 0; }
.md h3, .md h4 { margin-top: 14px; }
"""

JS = """\
"use strict";
(function () {
  function sortValue(row, index) {
    var cell = row.children[index];
    return cell ? cell.getAttribute("data-v") : null;
  }

  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-kind") === "num";
    var next = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
    if (!th.hasAttribute("aria-sort") && !numeric) { next = "ascending"; }
    var sign = next === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { r.setAttribute("data-pos", String(i)); });
    rows.sort(function (a, b) {
      var va = sortValue(a, index), vb = sortValue(b, index);
      var ea = va === null || va === "", eb = vb === null || vb === "";
      if (ea || eb) {
        if (ea && eb) { return Number(a.getAttribute("data-pos")) - Number(b.getAttribute("data-pos")); }
        return ea ? 1 : -1;
      }
      var d = numeric ? Number(va) - Number(vb) : va.localeCompare(vb);
      if (d === 0) { return Number(a.getAttribute("data-pos")) - Number(b.getAttribute("data-pos")); }
      return sign * d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", next);
  }

  function setUpSorting() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("th[data-kind]").forEach(function (th) {
        th.addEventListener("click", function () { sortBy(table, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
        });
      });
    });
  }

  function applyFilters() {
    var menus = document.querySelectorAll("select[data-filter]");
    var rows = document.querySelectorAll("tr[data-filter-row]");
    var shown = 0;
    rows.forEach(function (row) {
      var ok = true;
      menus.forEach(function (menu) {
        var want = menu.value;
        if (want === "") { return; }
        var have = (row.getAttribute("data-" + menu.getAttribute("data-filter")) || "").split("|");
        if (have.indexOf(want) < 0) { ok = false; }
      });
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    var count = document.getElementById("filter-count");
    if (count) { count.textContent = shown + " of " + rows.length + " tables shown"; }
  }

  function setUpFilters() {
    var menus = document.querySelectorAll("select[data-filter]");
    menus.forEach(function (menu) { menu.addEventListener("change", applyFilters); });
    var reset = document.getElementById("filter-reset");
    if (reset) {
      reset.addEventListener("click", function () {
        menus.forEach(function (menu) { menu.value = ""; });
        applyFilters();
      });
    }
    if (menus.length) { applyFilters(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpSorting();
    setUpFilters();
  });
})();
"""
