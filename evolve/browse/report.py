"""`evolve report`: one self-contained HTML page per run, with its pictures and sources beside it.

The folder opens from disk in any browser (no server, no network): index.html,
progress.png, grid.png, genomes/<id>.py.txt and diffs/<id>.diff.txt (.txt so
browsers show them instead of downloading them). A few lines of JS mark
<body data-images="loaded"> once every picture has decoded, for automated checks.
"""

from __future__ import annotations

import time
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from evolve.archive import RunArchive
from evolve.browse.curve import coverage_line
from evolve.browse.curves import curves_png, pruning_summary
from evolve.browse.gridview import grid_view
from evolve.browse.locate import genome_target
from evolve.browse.plots import heatmap_png, progress_png
from evolve.browse.queries import best, diff_text, elite_rows, running_best
from evolve.browse.runs import run_status, started_at, stored_settings
from evolve.browse.testsplit import OVERFIT_NOTE, test_records, test_text, test_view
from evolve.record import Evaluation
from evolve.textsafe import printable

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
.stats td:first-child { font-weight: bold; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.length > 0 && images.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", ok ? "loaded" : "broken");
});
"""


def write_report(archive: RunArchive, out: Path) -> Path:
    """Write the report folder `out`; returns the path of its index.html."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "genomes").mkdir(exist_ok=True)
    (out / "diffs").mkdir(exist_ok=True)
    records = sorted(archive.evaluations(), key=lambda r: (r.seq, r.id))
    elites = archive.elites()
    val = [r for r in records if not r.sealed]  # as selection saw them
    progress_png(val, elites, running_best(archive, val), out / "progress.png")
    heatmap_png(grid_view(archive.grid, elites), out / "grid.png")
    rows = elite_rows(archive)
    curves = curves_png(_best_curves(archive, rows), out / "curves.png")
    for row in rows:
        (out / "genomes" / f"{row['id']}.py.txt").write_text(archive.genome_source(row["genome"]))
        if row["parent_genome"]:
            target = genome_target(archive, row["genome"])
            (out / "diffs" / f"{row['id']}.diff.txt").write_text(diff_text(archive, target))
    page = _page(archive, rows, _stats(archive, records), curves)
    index = out / "index.html"
    index.write_text(page)
    return index


def _best_curves(archive: RunArchive, rows: list[dict[str, Any]]) -> list[tuple[str, object]]:
    """The reported curves of the best elite's evaluations and of its parent's first one."""
    if not rows:
        return []
    series: list[tuple[str, object]] = []
    for eval_id in rows[0]["eval_ids"][:5]:
        record = archive.get(eval_id)
        series.append((f"best {eval_id}", record.result.curve if record else None))
    parent = rows[0].get("parent_genome")
    if parent:
        for record in archive.evaluations_of(parent)[:1]:
            series.append((f"parent {record.id}", record.result.curve))
    return series


def _stats(archive: RunArchive, records: list[Evaluation]) -> list[tuple[str, str]]:
    config = archive.config
    run = config.get("config") or {}
    fingerprint = config.get("fingerprint") or {}
    settings = stored_settings(config)
    summary = archive.summary()
    elite, confirmed = best(archive)
    test = (
        None
        if elite is None
        else test_view(test_records(archive, [elite.genome]).get(elite.genome), elite, archive.rule)
    )
    statuses = Counter(r.status.value for r in records)
    operators = Counter(r.operator or "-" for r in records)
    gens = [int(g["gen"]) for g in archive.logbook()]
    started = started_at(archive)
    return [
        ("run", f"{archive.name} ({run_status(archive)})"),
        ("started", time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "-"),
        (
            "evaluations",
            f"{len(records)}: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common()),
        ),
        (
            "generations",
            f"{max(gens) + 1 if gens else 0}"
            + (f" of {run['generations']}" if run.get("generations") else ""),
        ),
        (
            "elites",
            f"{len(archive.elites())} of {archive.grid.total_cells} cells "
            f"({summary['coverage']:.1%}); QD score {summary['qd_score']:.3f}",
        ),
        ("coverage over time", coverage_line(archive) or "-"),
        ("strategy", f"{run.get('strategy', 'map-elites')}, selection {run.get('selection', '-')}"),
        (
            "best val_bpb",
            "-"
            if elite is None
            else f"{elite.mean:.4f} ± {elite.std:.4f} (n={elite.n}{'' if confirmed else ', unconfirmed'})",
        ),
        ("best on the sealed test split", _test_stat(test, archive.rule.z)),
        (
            "noise std",
            f"{archive.rule.noise_std:.4g} bpb (replacement margin z={archive.rule.z:g})",
        ),
        ("budget", f"{settings['budget']} s per evaluation, {settings['eval_tokens']} eval tokens"),
        (
            "device",
            f"{settings['device']} ({fingerprint.get('host', '?')}, torch "
            f"{fingerprint.get('torch', '?')})",
        ),
        ("dataset", f"{fingerprint.get('dataset', '?')} ({settings['dataset_fingerprint']})"),
        (
            "descriptors",
            ", ".join(
                f"{d.name} [{d.low:g}, {d.high:g}) × {d.bins}" for d in archive.grid.descriptors
            ),
        ),
        ("operators", ", ".join(f"{k} {v}" for k, v in operators.most_common())),
        ("pruning", f"{run.get('prune', 'off')}; " + (pruning_summary(records) or "none stopped")),
    ]


def _curves_html(drawn: bool) -> str:
    if not drawn:
        return ""
    return (
        '<h2>Training curves</h2>\n<img id="curves" src="curves.png" alt="reported training '
        'loss of the best elite and its parent">\n<p>As the genomes reported them: they may '
        "stop a child early (pruning), never score it.</p>"
    )


def _test_stat(test: dict[str, Any] | None, z: float) -> str:
    if test is None:
        return "not scored yet (the confirmed best is scored once on the test split)"
    if test["bpb"] is None:
        return f"{test['status']}: {test['reason']} ({test['id']})"
    verdict = (
        f"gap beyond chance (> {test['threshold']:.4f} = z × noise × √(1 + 1/n), "
        f"z={z:g}): the search may have overfitted the val split"
        if test["overfit"]
        else f"gap within chance (≤ {test['threshold']:.4f})"
    )
    return f"{test['bpb']:.4f}, test − val {test['gap']:+.4f}: {verdict} ({test['id']})"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row_html(row: dict[str, Any]) -> str:
    ident = escape(row["id"])
    diff = f'<a href="diffs/{ident}.diff.txt">diff</a>' if row["parent_genome"] else "-"
    origin = row.get("origin")
    parent = _html(
        row["parent"]
        or (f"{origin.get('run')}:{origin.get('id')}" if isinstance(origin, dict) else "-")
    )
    cells = [
        f'<td><a href="genomes/{ident}.py.txt">{ident}</a></td>',
        f"<td>{escape(str(tuple(row['cell'])))}</td>",
        f'<td class="num">{row["mean"]:.4f} ± {row["std"]:.4f}</td>',
        f'<td class="num">{row["n"]}</td>',
        f'<td class="num">{_html(test_text(row.get("test")))}</td>',
        f'<td class="num">{_fmt(row["params"], ",d")}</td>',
        f'<td class="num">{row["code_size"]}</td>',
        f'<td class="num">{_fmt(row["generation"], "d")}</td>',
        f"<td>{_html(row['operator'] or '-')}</td>",
        f"<td>{parent}</td>",
        f"<td>{diff}</td>",
        f"<td>{_html(row['idea'] or '')}</td>",
    ]
    return f'<tr class="elite" data-id="{ident}">{"".join(cells)}</tr>'


def _html(text: str) -> str:
    """Recorded text (a genome's or an LLM's) for the page: escapes visible, HTML escaped."""
    return escape(printable(str(text)))


def _page(
    archive: RunArchive,
    rows: list[dict[str, Any]],
    stats: list[tuple[str, str]],
    curves: bool = False,
) -> str:
    head = [
        "id",
        "cell",
        "val_bpb mean ± std",
        "n",
        "test (gap)",
        "params",
        "code lines",
        "gen",
        "operator",
        "parent",
        "diff",
        "idea",
    ]
    stats_html = "".join(f"<tr><td>{escape(k)}</td><td>{_html(v)}</td></tr>" for k, v in stats)
    table = "".join(_row_html(r) for r in rows) or (
        f'<tr><td colspan="{len(head)}">no elites yet</td></tr>'
    )
    note = (
        f'<p id="overfit">{escape(OVERFIT_NOTE)}</p>'
        if any((r.get("test") or {}).get("overfit") for r in rows)
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>evolve report: {escape(archive.name)}</title>
<style>{STYLE}</style>
<script>{SCRIPT}</script>
</head><body data-images="pending">
<h1>evolve run {escape(archive.name)}</h1>
<p>Written {escape(time.strftime("%Y-%m-%d %H:%M"))} from {escape(str(archive.path))}.</p>
<h2>Statistics</h2>
<table class="stats" id="stats">{stats_html}</table>
<h2>Progress</h2>
<img id="progress" src="progress.png" alt="val_bpb of every evaluation in order">
<h2>Grid</h2>
<img id="grid" src="grid.png" alt="MAP-Elites grid coloured by val_bpb">
{_curves_html(curves)}
<h2>Elites ({len(rows)}, best first)</h2>
<table id="elites"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>{table}</tbody></table>
{note}
</body></html>
"""
