import json

from jamem.cli import main


def test_xor_command(capsys, tmp_path):
    assert main(["xor", "--max-degree", "3", "--json", str(tmp_path / "x.json")]) == 0
    out = capsys.readouterr().out
    assert "solves_xor" in out
    rows = json.loads((tmp_path / "x.json").read_text())
    solved = {(r["kind"], r["degree"]): r["solves_xor"] for r in rows}
    assert solved == {
        ("power", 1): False,
        ("power", 2): False,
        ("power", 3): True,
        ("rectified", 1): False,
        ("rectified", 2): True,
        ("rectified", 3): True,
    }


def test_capacity_command_writes_json(tmp_path, capsys):
    path = tmp_path / "cap.json"
    assert (
        main(
            [
                "capacity",
                "--dims",
                "32",
                "--memories",
                "4,400",
                "--degrees",
                "3",
                "--sets",
                "1",
                "--starts",
                "8",
                "--flip-fraction",
                "0.1",
                "--json",
                str(path),
                "--csv",
                str(tmp_path / "cap.csv"),
            ]
        )
        == 0
    )
    data = json.loads(path.read_text())
    assert {"command", "date", "hardware"} <= set(data["meta"])
    fractions = {r["num_memories"]: r["recall_fraction"] for r in data["rows"]}
    assert fractions[4] == 1.0 and fractions[400] < 0.5
    assert "recall_fraction" in capsys.readouterr().out
    import csv

    with open(tmp_path / "cap.csv") as f:
        table = list(csv.DictReader(f))
    assert {int(r["num_memories"]): float(r["recall_fraction"]) for r in table} == fractions
