"""`sipec synth` command line: arguments, error messages, a small end-to-end run."""

from __future__ import annotations

import argparse
import json

import pytest

from sipec.cli import CliError
from sipec.synth import cli as synth_cli


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sipec")
    synth_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["synth", *argv])


@pytest.mark.parametrize(("argv", "message"), [
    (["--animals", "0"], "--animals: animals must be 1 to 8, not 0"),
    (["--animals", "9"], "--animals: animals must be 1 to 8, not 9"),
    (["--size", "640by480"], "--size: size '640by480' must look like WIDTHxHEIGHT"),
    (["--size", "641x480"], "--size: size 641x480: width and height must be even"),
    (["--size", "32x24"], "--size: size 32x24 is outside"),
    (["--frames", "0"], "--frames: frames must be at least 1"),
    (["--names", "a,b"], "--names: 2 identity names given for 4 animals"),
    (["--names", "a,a,b,c"], "--names: identity names must be distinct"),
    (["--crf", "60"], "--crf must be 0 to 51"),
    (["--seed", "-1"], "--seed: seed must be a non-negative integer"),
])
def test_bad_arguments_give_clear_messages(tmp_path, argv, message):
    args = _parse("--out", str(tmp_path / "out"), *argv)
    with pytest.raises(CliError) as err:
        args.func(args)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists(), "nothing is written when the arguments are wrong"


def test_camera_mode_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _parse("--out", "x", "--camera", "side")
    assert "invalid choice: 'side'" in capsys.readouterr().err


def test_run_writes_a_dataset_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "out"
    args = _parse("--out", str(out), "--animals", "2", "--frames", "6", "--size", "160x120", "--seed", "3",
                  "--names", "alice,bob", "--quiet")
    assert args.func(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["args"]["names"] == "alice,bob" and summary["seed"] == 3
    assert [i["name"] for i in summary["identities"]] == ["alice", "bob"]
    with pytest.raises(CliError, match="--out: .* is not empty; choose another folder or pass --overwrite"):
        args.func(args)
    args = _parse("--out", str(out), "--animals", "1", "--frames", "4", "--size", "160x120", "--quiet",
                  "--overwrite", "--camera", "perspective", "--no-objects")
    assert args.func(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["camera_mode"] == "perspective" and summary["objects"] == []
    assert not [p.name for p in out.iterdir() if ".partial-" in p.name]


def test_out_must_not_be_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    args = _parse("--out", str(target), "--frames", "2", "--size", "160x120", "--quiet")
    with pytest.raises(CliError, match="exists and is not a folder"):
        args.func(args)
