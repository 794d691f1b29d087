from pipeline.cli import main


def test_unknown_command_prints_usage(capsys):
    assert main(["train"]) == 2
    assert ("usage: raydistill {init,smoke,label,distill,predict,rounds,submit,round-step,export-review,"
            "import-review,export-onnx,retrain,models}") in capsys.readouterr().err


def test_config_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["label", str(tmp_path / "missing.yaml")]) == 1
    assert "error: config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {name: t}\n")
    assert main(["distill", str(bad)]) == 1
    assert "error: task.instruction: required key is missing" in capsys.readouterr().err


def test_smoke_from_another_directory_says_where_relative_paths_are_read(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "banking_support.yaml"
    monkeypatch.chdir(tmp_path)  # the example's relative data paths do not resolve here
    assert main(["label", str(example), "--smoke"]) == 1
    err = capsys.readouterr().err
    assert "error: data.input: examples/data/banking_support/train.jsonl does not exist" in err
    assert f"relative paths are read from the current directory, {tmp_path}" in err
    assert not (tmp_path / "runs").exists()  # stopped before building anything


def test_example_data_ships_with_the_project():
    """The example config's data is in the repository (a clone has no ../shared)."""
    from pathlib import Path

    from pipeline.config import load_config
    from pipeline.evaluate import load_gold

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "examples" / "banking_support.yaml")
    names = config.task.label_names
    for uri in (config.distill.validation, config.distill.test):
        texts, labels = load_gold(str(root / uri), names, "gold", config.storage)
        assert len(texts) > 0 and set(labels) == set(range(len(names)))  # every intent present
    corpus = (root / config.data.input).read_text().splitlines()
    assert len(corpus) >= 300
    assert "CC BY 4.0" in (root / "examples" / "data" / "README.md").read_text()


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("raydistill 0.")


def test_init_writes_a_starter_config_that_loads_and_never_overwrites(tmp_path, monkeypatch, capsys):
    from pipeline.config import load_config

    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    written = tmp_path / "raydistill.yaml"
    config = load_config(written)
    assert len(config.task.label_names) >= 2 and config.task.demos
    assert config.distill is not None and config.student is not None
    assert "#" in written.read_text()  # commented for the reader
    before = written.read_text()
    assert main(["init", "classification"]) == 1
    assert "raydistill.yaml exists; pass --force" in capsys.readouterr().err
    assert written.read_text() == before
    assert main(["init", "-o", "other.yaml"]) == 0 and load_config(tmp_path / "other.yaml") == config
    for kind in ("spans", "multilabel"):  # a starter per task type, each loading as it is
        assert main(["init", kind, "-o", f"{kind}.yaml"]) == 0
        typed = load_config(tmp_path / f"{kind}.yaml")
        assert typed.task.type == kind and typed.task.demos and typed.distill is not None
