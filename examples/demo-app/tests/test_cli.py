from todo.cli import main


def test_add_then_list(tmp_path, capsys):
    path = tmp_path / "todo.json"
    assert main(["--file", str(path), "add", "buy milk"]) == 0
    assert main(["--file", str(path), "list"]) == 0
    assert "1. buy milk" in capsys.readouterr().out
