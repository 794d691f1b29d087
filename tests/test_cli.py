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
