"""``brainbench report``: one matrix as a self-contained HTML file and a Markdown file for a paper.

The comparison table (with paired tests against a baseline when asked), the parent run's figures (inlined
in the HTML as base64 PNGs), the matrix spec, each input's data digest, and the command lines to rerun it.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainbench.matrix.summary import blocks as table_blocks
from brainbench.matrix.summary import (
    cell_rows,
    compare_to_baseline,
    directions,
    group_rows,
    legend,
    paired_rows,
    table_cells,
    to_markdown,
)
from brainbench.text_tables import markdown_table


@dataclass
class ReportData:
    name: str
    parent_run_id: str
    status: str
    tracking_uri: str
    experiment: str
    markdown_table: str
    groups: list[Any]
    higher: dict[str, bool]
    baseline: str | None
    spec_text: str | None
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    inputs: list[dict[str, str]] = field(default_factory=list)  # name, digest, context, runs
    commits: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)


def collect(tracker: Any, parent: Any, runs: list[Any], baseline: str | None) -> ReportData:
    rows = cell_rows(runs, tracker)
    groups = group_rows(rows)
    higher = directions(rows)
    if baseline:
        compare_to_baseline(groups, baseline, higher)
    client = tracker.client
    data = ReportData(
        name=parent.name, parent_run_id=parent.run_id, status=parent.status, tracking_uri=tracker.uri,
        experiment=tracker.experiment, markdown_table=to_markdown(groups, higher, baseline), groups=groups,
        higher=higher, baseline=baseline, spec_text=None,
        unfinished=[f"{row.label} ({row.status})" for row in rows if row.status != "FINISHED"],
    )
    with tempfile.TemporaryDirectory() as folder:
        artifacts = {a.path for a in client.list_artifacts(parent.run_id)}
        if "matrix.toml" in artifacts:
            data.spec_text = Path(client.download_artifacts(parent.run_id, "matrix.toml", folder)).read_text()
        for item in client.list_artifacts(parent.run_id, "figures"):
            if item.path.endswith(".png"):
                path = Path(client.download_artifacts(parent.run_id, item.path, folder))
                data.figures[Path(item.path).name] = path.read_bytes()
    seen: dict[tuple[str, str, str], int] = {}
    commits = set()
    for run in runs:
        commit = run.tags.get("mlflow.source.git.commit")
        if commit:
            commits.add(commit)
        try:
            inputs = client.get_run(run.run_id).inputs.dataset_inputs
        except Exception:  # an older run without inputs
            continue
        for item in inputs:
            context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
            key = (item.dataset.name, item.dataset.digest, context)
            seen[key] = seen.get(key, 0) + 1
    data.inputs = [{"name": n, "digest": d, "context": c, "runs": str(k)} for (n, d, c), k in sorted(seen.items())]
    data.commits = sorted(commits)
    return data


def rerun_commands(data: ReportData) -> list[str]:
    uri = data.tracking_uri
    commands = []
    if data.commits:
        commands.append(f"git checkout {data.commits[0]}   # the brainbench code these runs used")
    if data.spec_text is not None:
        commands.append(f"brainbench matrix run matrix.toml --tracking-uri {uri} --experiment {data.experiment}")
    compare = f"brainbench compare {data.parent_run_id} --tracking-uri {uri}"
    commands.append(compare + (f" --baseline '{data.baseline}'" if data.baseline else ""))
    commands.append(f"brainbench report {data.parent_run_id} --tracking-uri {uri}"
                    + (f" --baseline '{data.baseline}'" if data.baseline else ""))
    return commands


def to_markdown_report(data: ReportData) -> str:
    out = [f"# Matrix {data.name}", ""]
    out.append(f"Parent run `{data.parent_run_id}` ({data.status}) in `{data.tracking_uri}`, experiment "
               f"`{data.experiment}`.")
    if data.unfinished:
        out.append(f"\nNot finished: {', '.join(data.unfinished)}.")
    out += ["", "## Comparison", "", data.markdown_table, "## Figures", ""]
    out += [f"![{name}](figures/{name})" for name in sorted(data.figures)] or ["(none)"]
    out += ["", "## Data", ""]
    out += markdown_table(["input", "digest", "split", "runs"],
                          [[i["name"], f"`{i['digest']}`", str(i["context"]), str(i["runs"])] for i in data.inputs])
    if data.spec_text is not None:
        out += ["", "## Recipe (matrix.toml)", "", "```toml", data.spec_text.rstrip(), "```"]
    out += ["", "## Rerun", "", "```sh", *rerun_commands(data), "```", ""]
    return "\n".join(out)


def _html_table(headers: list[str], rows: list[list[str]], n_keys: int) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f"<td class='{'key' if i < n_keys else 'num'}'>{html.escape(c)}</td>" for i, c in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{padding:.25em .6em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.legend{color:#555;font-size:.9em}"""


def to_html_report(data: ReportData) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.name)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>Matrix {html.escape(data.name)}</h1>",
             f"<p>Parent run <code>{data.parent_run_id}</code> ({html.escape(data.status)}) in "
             f"<code>{html.escape(data.tracking_uri)}</code>, experiment "
             f"<code>{html.escape(data.experiment)}</code>.</p>"]
    if data.unfinished:
        parts.append(f"<p>Not finished: {html.escape(', '.join(data.unfinished))}.</p>")
    parts.append("<h2>Comparison</h2>")
    for task, dataset, members in table_blocks(data.groups):
        keys, values, rows = table_cells(members, data.higher, ("", " *"))
        parts.append(f"<h3>{html.escape(task)} on {html.escape(dataset)}</h3>")
        parts.append(_html_table(keys + values, rows, len(keys)))
        lines = legend(members, data.higher, data.baseline)
        parts.append("<ul class='legend'>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
        if data.baseline:
            pk, pv, prow = paired_rows(members)
            if prow:
                parts.append(f"<h4>Paired tests against {html.escape(data.baseline)}</h4>")
                parts.append(_html_table(pk + pv, prow, len(pk)))
    parts.append("<h2>Figures</h2>")
    for name, png in sorted(data.figures.items()):
        encoded = base64.b64encode(png).decode()
        parts.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{encoded}'>"
                     f"<figcaption>{html.escape(name)}</figcaption></figure>")
    parts.append("<h2>Data</h2>")
    parts.append(_html_table(["input", "digest", "split", "runs"],
                             [[i["name"], i["digest"], i["context"], i["runs"]] for i in data.inputs], 3))
    if data.spec_text is not None:
        parts.append(f"<h2>Recipe (matrix.toml)</h2><pre>{html.escape(data.spec_text)}</pre>")
    parts.append(f"<h2>Rerun</h2><pre>{html.escape(chr(10).join(rerun_commands(data)))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(data: ReportData, folder: Path) -> list[Path]:
    """report.html (self-contained), report.md with figures/ and matrix.toml beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "figures").mkdir(exist_ok=True)
    for name, png in data.figures.items():
        (folder / "figures" / name).write_bytes(png)
    written = [folder / "report.html", folder / "report.md"]
    written[0].write_text(to_html_report(data))
    written[1].write_text(to_markdown_report(data))
    if data.spec_text is not None:
        (folder / "matrix.toml").write_text(data.spec_text)
        written.append(folder / "matrix.toml")
    (folder / "report.json").write_text(json.dumps(
        {"parent_run_id": data.parent_run_id, "inputs": data.inputs, "commits": data.commits}, indent=2))
    return written
