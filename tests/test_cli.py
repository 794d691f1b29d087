from pipeline.cli import main


def test_unknown_command_prints_usage(capsys):
    assert main(["train"]) == 2
    assert "usage: raydistill {label,distill,predict,rounds,round-step}" in capsys.readouterr().err


def test_config_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["label", str(tmp_path / "missing.yaml")]) == 1
    assert "error: config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {name: t}\n")
    assert main(["distill", str(bad)]) == 1
    assert "error: task.instruction: required key is missing" in capsys.readouterr().err


def test_smoke_outside_the_workspace_says_where_the_data_must_be(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "financial_sentiment.yaml"
    monkeypatch.chdir(tmp_path)  # no shared/ beside this folder
    assert main(["label", str(example), "--smoke"]) == 1
    err = capsys.readouterr().err
    assert "error: data.input: ../shared/data/financial_phrasebank/train.jsonl does not exist" in err
    assert "the checkout must sit beside shared/" in err
    assert not (tmp_path / "runs").exists()  # stopped before building anything
