"""Matrix specs: parsing, expansion, overrides, errors naming the field, the one-liner's generated spec."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from brainbench.config import RunConfig
from brainbench.errors import DataError
from brainbench.matrix.spec import expand, matrix_id, parse_spec, spec_from_configs

SPEC = """
name = "demo"
[defaults]
task = "retrieval"
epochs = 2
[defaults.encoder_options]
hidden = 256
[axes]
encoders = ["ridge", "mindeye"]
subject = [1, 2]
seed = [0, 1]
"task_options.way" = [50, 100]
[[overrides]]
match = { encoder = "ridge" }
drop = ["encoder_options.hidden"]
set = { epochs = 1 }
[[overrides]]
match = { encoder = "mindeye", subject = [2] }
set = { "encoder_options.hidden" = 512, lr = 0.001 }
"""


def test_axes_product_with_defaults_and_overrides():
    cells = expand(parse_spec(SPEC))
    assert len(cells) == 2 * 2 * 2 * 2
    by = {(c.config.encoder, c.config.subject, c.config.seed, c.config.task_options["way"]): c for c in cells}
    ridge = by[("ridge", 1, 0, 50)].config
    assert ridge.encoder_options == {} and ridge.epochs == 1 and ridge.task == "retrieval"
    mindeye1 = by[("mindeye", 1, 1, 100)].config
    assert mindeye1.encoder_options == {"hidden": 256} and mindeye1.epochs == 2 and mindeye1.lr is None
    mindeye2 = by[("mindeye", 2, 0, 50)]
    assert mindeye2.config.encoder_options == {"hidden": 512} and mindeye2.config.lr == 0.001
    assert mindeye2.details == ["way=50", "override #2 (hidden=512, lr=0.001)"]
    assert len({c.config.key for c in cells}) == len(cells)


def test_cells_that_end_up_identical_run_once():
    text = """
[defaults]
task = "retrieval"
[axes]
encoder = ["ridge", "mindeye"]
"encoder_options.hidden" = [256, 512]
[[overrides]]
match = { encoder = "ridge" }
drop = ["encoder_options.hidden"]
"""
    cells = expand(parse_spec(text))
    assert sorted((c.config.encoder, c.config.encoder_options.get("hidden")) for c in cells) == [
        ("mindeye", 256),
        ("mindeye", 512),
        ("ridge", None),
    ]


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("[defaults]\nencoder = 'ridge'\ntask = 'retrieval'\nepoch = 3\n", "'epoch'"),
        ("[defaults]\ntask = 'retrieval'\n[axes]\nencoder = ['ridge']\nsubjekt = [1]\n", "'subjekt'"),
        (
            "[defaults]\ntask = 'retrieval'\n[axes]\nencoder = ['ridge']\n[[overrides]]\n"
            "match = { encodr = 'ridge' }\nset = { epochs = 1 }\n",
            "'encodr'",
        ),
        (
            "[defaults]\ntask = 'retrieval'\nencoder = 'ridge'\n[[overrides]]\nmatch = {}\n"
            "set = { 'model_options.x' = 1 }\n",
            "'model_options.x'",
        ),
        ("name = 'x'\n[axis]\nencoder = ['ridge']\n", "'axis'"),
        (
            "[defaults]\ntask = 'retrieval'\nencoder = 'ridge'\n[[overrides]]\nmatch = {}\n"
            "sett = { epochs = 1 }\n",
            "'sett'",
        ),
    ],
)
def test_unknown_fields_are_errors_naming_the_field(text, culprit):
    with pytest.raises(DataError, match=culprit):
        expand(parse_spec(text, "bad.toml"))


def test_bad_values_and_missing_fields_name_the_file():
    with pytest.raises(DataError, match="bad.toml.*repeats='twice': must be one of"):
        expand(parse_spec("[defaults]\nencoder='ridge'\ntask='retrieval'\nrepeats='twice'\n", "bad.toml"))
    with pytest.raises(DataError, match="bad.toml.*needs task"):
        expand(parse_spec("[axes]\nencoder=['ridge']\n", "bad.toml"))
    with pytest.raises(DataError, match="bad.toml: not valid TOML"):
        parse_spec("[axes\n", "bad.toml")


def test_matrix_id_is_the_set_of_cells():
    cells = [c.config for c in expand(parse_spec(SPEC))]
    assert matrix_id(cells) == matrix_id(list(reversed(cells)))
    assert matrix_id(cells) != matrix_id(cells[:-1])


def test_one_liner_becomes_an_equivalent_spec():
    configs = [
        RunConfig(encoder=e, task="retrieval", subject=s, seed=r, epochs=2, encoder_options={"hidden": 256})
        for e in ("litemind", "ridge")
        for s in (1, 2)
        for r in (0, 1)
    ]
    spec = spec_from_configs(configs, "cli")
    assert "[axes]" in spec.text and 'encoder = ["litemind", "ridge"]' in spec.text
    assert "encoder_options.hidden" in spec.text
    assert sorted(c.config.key for c in expand(parse_spec(spec.text))) == sorted(c.key for c in configs)


def test_dry_run_prints_the_cells(tmp_path):
    from brainbench.cli.app import build_app

    path = tmp_path / "demo.toml"
    path.write_text(SPEC)
    result = CliRunner().invoke(
        build_app(), ["matrix", "run", str(path), "--dry-run"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    cells = expand(parse_spec(SPEC))
    assert "16 cells" in result.output
    assert all(c.config.key in result.output for c in cells)
    assert "override #1 (epochs=1, -hidden)" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults]\nencoder = 'ridge'\ntask = 'retrieval'\nepoch = 3\n")
    result = CliRunner().invoke(build_app(), ["matrix", "run", str(bad), "--dry-run"])
    assert isinstance(result.exception, DataError) and "epoch" in str(result.exception)


def test_settings_added_later_keep_earlier_cell_keys_at_their_defaults():
    import hashlib
    import json

    config = RunConfig(encoder="ridge", task="retrieval", seed=3)
    # what earlier versions hashed: no compile, no optimizer, no checkpoint_every, no log_model
    before_compile = {
        k: v for k, v in config.to_dict().items()
        if k not in ("compile", "optimizer", "checkpoint_every", "log_model")
    }
    expected = hashlib.sha256(json.dumps(before_compile, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert config.key == expected
    assert config.with_changes(compile="on").key != config.key
    assert config.with_changes(optimizer="adamw8bit").key != config.key  # another optimizer computes otherwise
    assert config.with_changes(checkpoint_every=5).key == config.key  # how often to save is not what is computed
    assert config.with_changes(log_model=True).key == config.key  # nor is logging the model too
