"""`brainbench reproduce litemind`: the shipped spec, its experiments, the dry run, and a small real run with its
report (published numbers beside ours, the t-SNE artifact, resume)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from brainbench.errors import DataError
from brainbench.matrix.experiments import cells_by_experiment, variant_of
from brainbench.matrix.spec import expand, load_spec, parse_spec
from brainbench.papers import published_path, spec_path
from brainbench.papers.plan import PlanOptions, make_plan, undeclared_option
from brainbench.papers.published import load_published
from tests.conftest import REPO, run_cli

EXPECTED_CELLS = {"retrieval": 12, "laion": 2, "god": 10, "depth": 4, "modules": 6, "regions": 6}


def test_the_shipped_spec_expands_to_the_papers_experiments():
    spec = load_spec(spec_path("litemind"))
    by_experiment = dict((e.name, cells) for e, cells in cells_by_experiment(spec))
    assert {name: len(cells) for name, cells in by_experiment.items()} == EXPECTED_CELLS
    assert list(by_experiment) == list(EXPECTED_CELLS)  # the paper's order
    retrieval = by_experiment["retrieval"]
    assert {(c.config.encoder, c.config.subject) for c in retrieval} == {
        (e, s) for e in ("litemind", "mindeye", "ridge") for s in (1, 2, 5, 7)}
    targets = {c.config.encoder: c.config.target for c in retrieval}
    assert targets == {"litemind": "synthetic-clip-tokens", "mindeye": "synthetic-clip-tokens",
                       "ridge": "synthetic-clip"}
    modules = {variant_of(c): c.config.encoder_options for c in by_experiment["modules"]}
    assert modules["w/o frequency projector (FreMLP)"] == {"fremlp": "none"}
    assert modules["w/o spectrum compression (filter)"] == {"filter": "none"}
    assert modules["w/o positional embedding"] == {"pos_embed": "none"}
    assert modules["w/o patch compression (linear tokens)"] == {"tokenizer": "linear"}
    assert modules["Lite-Mind (full)"] == {}
    assert [c.config.task_options.get("prior") for c in by_experiment["laion"]] == [None, "diffusion"]
    assert {c.config.subject for c in by_experiment["god"]} == {1, 2, 3, 4, 5}
    # the full model on subject 1 is one cell in four tables: it runs once
    full = [c for c in retrieval if c.config.encoder == "litemind" and c.config.subject == 1][0]
    for name in ("depth", "modules", "regions"):
        assert full.config.key in {c.config.key for c in by_experiment[name]}
    assert len(expand(spec)) == sum(EXPECTED_CELLS.values()) - 3


def test_quick_overrides_apply_to_quick_cells_only():
    spec = load_spec(spec_path("litemind"))
    quick = make_plan(spec, PlanOptions(budget="quick", only=["retrieval", "regions"]))
    reference = make_plan(spec, PlanOptions(budget="reference", only=["retrieval", "regions"]))
    for plan, target, patch in ((quick, "synthetic-clip", 100), (reference, "synthetic-clip-tokens", None)):
        cells = [c for p in plan.experiments for c in p.cells + [s for s, _ in p.skipped]]
        assert {c.config.target for c in cells if c.config.encoder in ("mindeye", "litemind")} == {target}
        regions = [c for c in cells if "experiment regions" in c.details]
        assert {c.config.encoder_options.get("patch_size") for c in regions} == {patch}
        assert {c.config.budget for c in cells} == {plan.options.budget}
    scales = {c.config.dataset_options.get("scale") for c in reference.cells}
    assert scales == {"nsd"}


def test_only_tsne_keeps_the_full_models_retrieval_runs():
    plan = make_plan(load_spec(spec_path("litemind")), PlanOptions(only=["tsne"], subjects=[1]))
    assert [(p.experiment.name, [c.config.label() for c in p.cells]) for p in plan.experiments] == [
        ("retrieval", ["litemind/retrieval/sub1/seed0"])]
    with pytest.raises(DataError, match="experiments: retrieval, laion, god, depth, modules, regions, tsne"):
        make_plan(load_spec(spec_path("litemind")), PlanOptions(only=["tnse"]))


def test_real_data_swaps_datasets_and_targets_and_skips_what_has_no_data():
    plan = make_plan(load_spec(spec_path("litemind")), PlanOptions(budget="reference", data_path="/data/nsd"))
    nsd = [c.config for c in plan.cells]
    assert {c.dataset for c in nsd} == {"nsd"} and {c.data_path for c in nsd} == {"/data/nsd"}
    assert {c.target for c in nsd} == {"clip-vit-l-14-tokens", "clip-vit-l-14"}
    assert all("scale" not in c.dataset_options for c in nsd)
    god = [why for name, _, why in plan.skipped if name == "god"]
    assert len(god) == 10 and all("--god-path" in why for why in god)


def test_experiment_tables_are_checked():
    base = 'name = "x"\n[[experiments]]\nname = "a"\n[experiments.defaults]\nencoder = "ridge"\ntask = "retrieval"\n'
    assert len(expand(parse_spec(base))) == 1
    with pytest.raises(DataError, match="unknown key"):
        parse_spec('[[experiments]]\nname = "a"\ncolour = 1\n')
    with pytest.raises(DataError, match="unknown field 'colour'"):
        parse_spec(base + "colour = 1\n")
    with pytest.raises(DataError, match="used twice"):
        parse_spec(base + '[[experiments]]\nname = "a"\n')
    with pytest.raises(DataError, match="label"):
        parse_spec(base + '[[experiments.variants]]\n"encoder_options.alpha" = 1\n')


def test_published_numbers_have_sources_and_the_issues_figures():
    published = load_published(published_path("litemind"))
    lite = published.lookup("retrieval", "litemind", "fmri_to_image_top1_300way", 1)
    assert lite is not None and lite.value == pytest.approx(0.946) and "v4" in lite.source
    mindeye = published.lookup("parameters", "mindeye", "parameters", None)
    assert mindeye is not None and mindeye.value == 996_000_000
    assert all(n.source for n in published.numbers)
    assert published.missing(), "unknown numbers stay empty, to be filled in"
    experiments = {e.name for e, _ in cells_by_experiment(load_spec(spec_path("litemind")))}
    assert {n.experiment for n in published.numbers} <= experiments | {"parameters"}


def test_matrix_run_takes_the_shipped_spec_or_names_the_missing_option(tmp_path: Path):
    spec = load_spec(spec_path("litemind"))
    missing = [why for cell in expand(spec) if (why := undeclared_option(cell.config))]
    done = run_cli("matrix", "run", str(REPO / "brainbench/papers/litemind.toml"), "--dry-run", cwd=tmp_path,
                   env={"COLUMNS": "250"}, timeout=900)
    if missing:  # a build without the prior / ROI options: refused before any run, naming the option
        assert done.returncode == 2, done.stdout + done.stderr
        assert "prior" in done.stderr or "roi" in done.stderr
    elif done.returncode == 0:
        assert f"{len(expand(spec))} cells" in done.stdout
    else:  # as written (reference budget) on the demo simulator: a small region's cell is refused before any run
        assert done.returncode == 2 and "patch" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "mlflow.db").exists()


def test_dry_run_lists_the_cells_and_the_expected_time(tmp_path: Path):
    plan = make_plan(load_spec(spec_path("litemind")), PlanOptions())
    done = run_cli("reproduce", "litemind", "--dry-run", cwd=tmp_path, env={"COLUMNS": "250"}, timeout=900)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{len(plan.cells)} cells to run" in out
    for name in EXPECTED_CELLS:
        assert name in out
    assert "w/o frequency projector (FreMLP)" in out and "(shared, above)" in out
    flat = " ".join(out.split())
    expected = rf"expected time: about [\d.]+ (s|min|h) for {len(plan.cells)} cells on (cpu|cuda)"
    assert re.search(expected, flat), flat[-600:]
    assert re.search(r"at the [\d.]+ GFLOP/s a float32 matmul reaches here now", flat)
    for experiment, cell, why in plan.skipped:
        assert f"skipped ({experiment}): {cell.config.label()}" in flat and " ".join(why.split()) in flat
    assert not (tmp_path / "mlflow.db").exists()  # a dry run creates nothing


@pytest.mark.slow
def test_a_small_reproduction_writes_the_report_and_resumes(tmp_path: Path):
    args = ("reproduce", "litemind", "--scale", "tiny", "--only", "retrieval", "--subject", "1", "--opt",
            "patch_size=20", "--opt", "depths=1,1,1,1", "--epochs", "2", "--out", "out")
    done = run_cli(*args, cwd=tmp_path, env={"COLUMNS": "200"}, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    markdown = (tmp_path / "out/report.md").read_text()
    html = (tmp_path / "out/report.html").read_text()
    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections[:3] == ["## 1. fMRI/image retrieval on NSD: 300-way and full, both directions",
                            "## 2. t-SNE of test-set brain embeddings against CLIP image embeddings",
                            "## 3. Parameters and FLOPs of each model"]
    assert "94.6%" in markdown and "paper (300-way)" in markdown  # published beside ours
    assert "| litemind | ok |" in markdown and "| ridge | ok |" in markdown
    assert "996,000,000" in markdown and "15,657,859" in markdown
    assert "<table>" in html and "data:image/png;base64," in html and "&lt;" not in markdown
    assert (tmp_path / "out/figures/tsne_subject1.png").read_bytes()[:4] == b"\x89PNG"

    from brainbench.records.query import children, matrix_parents
    from brainbench.records.tracker import SafeTracker

    tracker = SafeTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "litemind-paper")
    parent = matrix_parents(tracker)[0]
    lite = [r for r in children(tracker, parent.run_id) if r.params.get("encoder") == "litemind"][0]
    folder = tracker.client.download_artifacts(lite.run_id, "figures/tsne.json", str(tmp_path))
    record = json.loads(Path(folder).read_text())
    assert record["n_points"] == 2 * record["n_items"] == 60 and len(record["brain"]) == 30
    assert record["method"].startswith("sklearn.manifold.TSNE")
    names = {a.path for a in tracker.client.list_artifacts(parent.run_id, "paper_report")}
    assert names == {"paper_report/report.html", "paper_report/report.md"}

    again = run_cli(*args, cwd=tmp_path, env={"COLUMNS": "200"}, timeout=900)  # resumes: nothing left to train
    assert again.returncode == 0, again.stderr
    assert "ran 0, 3 finished before" in again.stdout
    # a bigger plan later trains only its new cells: ridge on subject 2 (the others finished under another matrix)
    more = run_cli(*args[:6], "--subject", "2", *args[6:], cwd=tmp_path, env={"COLUMNS": "200"}, timeout=1800)
    assert more.returncode == 0, more.stdout + more.stderr
    assert "ran 3, failed 0, 3 finished before" in more.stdout

    only = run_cli(*args[:-2], "--out", "again", "--report-only", cwd=tmp_path, env={"COLUMNS": "200"}, timeout=900)
    assert only.returncode == 0, only.stderr
    text = (tmp_path / "again/report.md").read_text()
    assert "3: 3 finished, 0 not (report only" in text and "| litemind | ok |" in text


def test_the_wheel_ships_the_spec_the_published_numbers_and_the_templates(tmp_path: Path):
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("brainbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("litemind.toml", "litemind_published.toml", "templates/report.md.j2", "templates/report.html.j2"):
        assert f"brainbench/papers/{name}" in names
