"""The report sets the paper's published numbers beside ours (issue 21 item 5).

Run folders are hand-built (conftest's outputs.h5, plus the config.json the
paper configs' runs write), so every number of ours is the conftest's known
one; the paper's numbers below are typed from the paper's Tables 3-5, not
taken from amid.evaluate.paper.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from amid.errors import AmidError
from amid.evaluate.cli import app
from amid.evaluate.evaluate import evaluate_outputs, evaluate_run
from amid.evaluate.summary import summarize

runner = CliRunner()

# The paper, Table 4 (UCF51 Top-1, student / teacher) and Table 5 (student).
TABLE_4 = {"baseline": ("66.7", "–"), "teacher": ("74.3", "74.3"), "ts": ("69.8", "71.2"),
           "ts_ta": ("72.7", "76.0"), "amid": ("73.8", "75.7"), "amid_ccl": ("72.3", "74.3")}
TABLE_5 = {"amid_fixed_teacher": "66.0", "amid_no_warmup": "65.8",
           "amid_no_enhanced": "72.8", "amid_static_weights": "72.7"}
# Table 3 (IEMOCAP WA / UA) per setup; the baseline (setup V) is 51.2 / 50.8.
TABLE_3 = {"A-V": {"gmc": ("51.7", "50.9"), "crcd": ("51.8", "50.2"), "ccl": ("51.5", "51.4"),
                   "amid": ("52.5", "51.7")},
           "L-V": {"gmc": ("50.9", "50.5"), "crcd": ("50.2", "49.9"), "ccl": ("52.7", "51.8"),
                   "amid": ("53.0", "52.4")},
           "AL-V": {"gmc": ("51.9", "50.5"), "crcd": ("52.0", "49.4"), "ccl": ("53.2", "51.4"),
                    "amid": ("53.8", "52.7")}}

# How the paper configs name and record their runs: methods.<run name>, with `method`
# for a variant and `preset` for ts / ts_ta / amid.
PAPER_RUNS = {
    "baseline": {}, "teacher": {}, "crd": {},
    "ts": {"preset": "paper"}, "ts_ta": {"preset": "paper"}, "amid": {"preset": "paper"},
    "amid_ccl": {"method": "amid", "preset": "paper", "mi_variant": "ccl"},
    "amid_fixed_teacher": {"method": "amid", "preset": "paper", "fixed_teacher": True},
    "amid_no_warmup": {"method": "amid", "preset": "paper", "warmup_epochs": 0},
    "amid_no_enhanced": {"method": "amid", "preset": "paper", "enhanced_disc": False},
    "amid_static_weights": {"method": "amid", "preset": "paper", "dynamic_weights": False},
}


def make_run(root: Path, folder: str, run: str, entry: dict, fake, *, dataset: str = "ucf51",
             auxiliary: list[str] | None = None) -> Path:
    """runs/<folder> as amid-train writes it (outputs.h5 and config.json name the run;
    config.json's entry records the registered method), scored into metrics/<folder>.json."""
    method = entry.get("method", run)
    outputs = fake.write_outputs(root / "runs" / folder / "outputs.h5", method=run,
                                 teacher=method != "baseline", dataset=dataset)
    (outputs.parent / "config.json").write_text(json.dumps({"method": run, "config": {
        "dataset": {"name": dataset, "target": ["visual"],
                    "auxiliary": auxiliary if auxiliary is not None else ["audio"]},
        "methods": {run: {**entry, "method": method}}}}))
    out = root / "metrics" / f"{folder}.json"
    evaluate_run(outputs, out, ks=[1])
    return out


def table(text: str, heading: str | None = None) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The first Markdown table after `heading` (the first of the text when None)."""
    if heading is not None:
        text = text[text.index(heading):]
    lines = []
    for line in text[text.index("|"):].splitlines():
        if not line.startswith("|"):
            break
        lines.append(line)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        key = cells[1] if header[1] == "Run" else cells[0]
        rows[key] = dict(zip(header, cells, strict=True))
    return header, rows


def write_params(root: Path, dataset: str) -> None:
    """The parts of a paper config the report reads (dataset.name picks the table)."""
    (root / "params.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": dataset, "target": ["visual"], "auxiliary": ["audio"]},
        "extract": {"visual": {}, "audio": {}}}))


def paper_project(root: Path, fake) -> None:
    for run, entry in PAPER_RUNS.items():
        make_run(root, run, run, entry, fake)
    # the configs' own variant at the recommended preset
    make_run(root, "amid_recommended", "amid_recommended",
             {"method": "amid", "preset": "recommended"}, fake)
    write_params(root, "ucf51")


def test_metrics_file_names_the_run_its_preset_and_its_label(tmp_path, fake):
    ccl = json.loads(make_run(tmp_path, "amid_ccl", "amid_ccl", PAPER_RUNS["amid_ccl"],
                              fake).read_text())
    assert (ccl["method"], ccl["run"], ccl["preset"], ccl["label"]) == \
        ("amid", "amid_ccl", "paper", "amid_ccl")
    assert ccl["auxiliary"] == ["audio"]
    # methods.amid at the recommended preset (the README's own-data start) and the
    # configs' run named for it are labelled alike
    rec = json.loads(make_run(tmp_path, "amid", "amid", {"preset": "recommended"}, fake,
                              auxiliary=["audio", "text"]).read_text())
    assert (rec["method"], rec["run"], rec["label"]) == ("amid", "amid", "amid (recommended)")
    assert rec["auxiliary"] == ["audio", "text"]
    named = json.loads(make_run(tmp_path, "amid_recommended", "amid_recommended",
                                {"method": "amid", "preset": "recommended"}, fake).read_text())
    assert (named["method"], named["run"], named["label"]) == \
        ("amid", "amid_recommended", "amid (recommended)")
    base = json.loads(make_run(tmp_path, "baseline", "baseline", {}, fake).read_text())
    assert "preset" not in base and base["label"] == "baseline"
    # DESIGN.md 3.3's fields stay as they were, first
    assert list(base)[:4] == ["method", "dataset", "fold", "seed"]


def test_summary_keeps_the_run_fields_and_never_mixes_presets(tmp_path, fake):
    files = [make_run(tmp_path, name, "amid", {"preset": "recommended"}, fake)
             for name in ("amid", "amid_seed1")]
    summary = summarize(files)
    assert (summary["run"], summary["preset"], summary["label"]) == \
        ("amid", "recommended", "amid (recommended)")
    other = make_run(tmp_path, "amid_seed2", "amid", {"preset": "paper"}, fake)
    with pytest.raises(AmidError, match="different presets"):
        summarize([*files, other])


def test_a_damaged_run_record_is_one_error_naming_the_key(tmp_path, fake):
    outputs = fake.write_outputs(tmp_path / "run" / "outputs.h5")
    (tmp_path / "run" / "config.json").write_text(json.dumps(
        {"method": "amid", "config": {"methods": {"amid": {"preset": 3}}}}))
    with pytest.raises(AmidError, match=r"config\.json: `config\.methods\.amid\.preset` must "
                                        "be a string"):
        evaluate_outputs(outputs, ks=[1])


def test_ucf51_report_sets_the_paper_beside_ours(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paper_project(tmp_path, fake)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    text = Path("reports/results.md").read_text()
    header, rows = table(text)
    assert header == ["Method", "Top-1", "Paper Top-1", "Top-5", "WA", "UA", "R@1",
                      "Teacher Top-1", "Paper Teacher Top-1", "Gap"]
    for run, (student, teacher) in TABLE_4.items():
        assert (rows[run]["Paper Top-1"], rows[run]["Paper Teacher Top-1"]) == \
            (student, teacher), run
    for run, student in TABLE_5.items():
        assert (rows[run]["Paper Top-1"], rows[run]["Paper Teacher Top-1"]) == (student, "–")
    # Table 1 (the competitors on UCF51) is lost from the paper's text: nothing made up
    assert rows["crd"]["Paper Top-1"] == "–"
    assert list(rows) == ["baseline", "teacher", "ts", "ts_ta", "amid", "amid_ccl",
                          "amid_fixed_teacher", "amid_no_warmup", "amid_no_enhanced",
                          "amid_static_weights", "amid (recommended)", "crd"]  # paper's order
    # the recommended preset is not the paper's configuration: labelled, and no paper number
    assert rows["amid (recommended)"]["Paper Top-1"] == "–"
    assert rows["amid (recommended)"]["Top-1"] == rows["amid"]["Top-1"] == "**75.0**"
    # published numbers are references, never bolded
    assert not any("**" in r[c] for r in rows.values() for c in header if c.startswith("Paper"))
    assert "Tables 1 and 2" in text and "amid (recommended): not the paper's" in text
    assert Path("reports/confusion_amid_recommended.png").is_file()


def test_ucf51_report_has_the_ladder_in_the_papers_order(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paper_project(tmp_path, fake)
    assert runner.invoke(app, ["report"]).exit_code == 0
    text = Path("reports/results.md").read_text()
    header, rows = table(text, "the ablation ladder")
    assert header == ["Configuration (paper)", "Run", "Top-1", "Paper Top-1", "Teacher Top-1",
                      "Paper Teacher Top-1"]
    assert list(rows) == ["baseline", "teacher", "ts", "ts_ta", "amid", "amid_ccl",
                          "amid_fixed_teacher", "amid_no_warmup", "amid_no_enhanced",
                          "amid_static_weights"]  # not a rung of the paper: amid_recommended
    configurations = [r["Configuration (paper)"] for r in rows.values()]
    assert configurations[:2] == ["student alone (w/o distillation)",
                                  "teacher alone (w/o distillation)"]
    assert configurations[-4:] == ["with fixed teacher", "w/o warm-up",
                                   "w/o enhanced discriminator", "w/o dynamic weight"]
    for run, (student, teacher) in TABLE_4.items():
        want = (student if run != "teacher" else "–", teacher)
        assert (rows[run]["Paper Top-1"], rows[run]["Paper Teacher Top-1"]) == want, run
    for run, student in TABLE_5.items():
        assert rows[run]["Paper Top-1"] == student
    # ours: the conftest run's student 3/4 and teacher 2/3; the teacher method has no student
    assert (rows["ts"]["Top-1"], rows["ts"]["Teacher Top-1"]) == ("75.0", "66.7")
    assert (rows["teacher"]["Top-1"], rows["teacher"]["Teacher Top-1"]) == ("–", "66.7")
    assert rows["baseline"]["Teacher Top-1"] == "–"


def test_no_ladder_without_its_rungs(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for run in ("baseline", "amid"):
        make_run(tmp_path, run, run, PAPER_RUNS[run], fake)
    write_params(tmp_path, "ucf51")
    assert runner.invoke(app, ["report"]).exit_code == 0
    text = Path("reports/results.md").read_text()
    assert "Paper Top-1" in text and "ladder" not in text


@pytest.mark.parametrize(("auxiliary", "setup"), [(["audio"], "A-V"), (["text"], "L-V"),
                                                  (["audio", "text"], "AL-V")])
def test_iemocap_paper_column_follows_the_auxiliary_modalities(tmp_path, fake, auxiliary,
                                                               setup):
    from amid.evaluate.report import collect_rows, markdown_report

    files = [make_run(tmp_path, run, run, {}, fake, dataset="iemocap", auxiliary=auxiliary)
             for run in ("baseline", "gmc", "crcd", "ccl", "amid", "kd")]
    tables = collect_rows(files)
    text = markdown_report(tables)
    header, rows = table(text)
    assert header[header.index("WA") + 1] == "Paper WA"
    assert header[header.index("UA") + 1] == "Paper UA"
    assert "Paper Top-1" not in header  # Table 3 reports WA and UA only
    assert (rows["baseline"]["Paper WA"], rows["baseline"]["Paper UA"]) == ("51.2", "50.8")
    for run, (wa, ua) in TABLE_3[setup].items():
        assert (rows[run]["Paper WA"], rows[run]["Paper UA"]) == (wa, ua), run
    assert (rows["kd"]["Paper WA"], rows["kd"]["Paper UA"]) == ("–", "–")  # not in the paper
    assert f"Setup {setup}" in text


def test_demo_and_activitynet_reports_have_no_paper_numbers(tmp_path, fake):
    from amid.evaluate.report import collect_rows, markdown_report

    for dataset in ("demo", "activitynet"):
        files = [make_run(tmp_path / dataset, run, run, PAPER_RUNS[run], fake, dataset=dataset)
                 for run in ("baseline", "ts", "ts_ta", "amid")]
        text = markdown_report(collect_rows(files))
        assert "Paper" not in table(text)[0][1:] and "Paper Top-1" not in text
        if dataset == "demo":  # the demo's report stays as it was: no column, note, ladder
            assert "Paper columns" not in text and "ladder" not in text
        else:  # ActivityNet is in the paper's Tables 1-2 only, lost from its text: said so
            assert "Paper columns: none" in text and "Tables 1 and 2" in text


def test_older_metrics_files_are_named_by_file(tmp_path):
    """A metrics file written before `run` existed: the pipeline named it for its run."""
    from amid.evaluate.report import collect_rows, markdown_table

    paths = []
    for name in ("amid", "amid_ccl"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"method": "amid", "dataset": "ucf51", "fold": None,
                                    "seed": 0, "student": {"top1": 0.7}}))
        paths.append(path)
    _, rows = table(markdown_table(collect_rows(paths)["ucf51"]))
    assert (rows["amid"]["Paper Top-1"], rows["amid_ccl"]["Paper Top-1"]) == ("73.8", "72.3")
