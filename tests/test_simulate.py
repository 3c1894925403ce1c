"""lbcore simulate end to end: the command, report.json's figures, the pictures, bad input."""

from __future__ import annotations

import json
import os
import shlex
import struct
import subprocess
import sys

import pytest

from lbcore import SCHEDULERS
from lbcore.cli import EXIT_BAD_INPUT, main
from lbcore.simulate.plots import HEIGHT, WIDTH, share_height

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
EXAMPLES = os.path.join(ROOT, "examples")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: str) -> tuple[int, int]:
    """(width, height) from a PNG's header, which must be a valid signature and IHDR."""
    with open(path, "rb") as file:
        head = file.read(24)
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def simulate_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["simulate", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_synthetic_run_writes_the_report_the_table_and_three_pictures(tmp_path, capsys):
    out_dir = tmp_path / "report"
    status, out, err = simulate_cli(
        capsys, "--endpoints", "8", "--weights", "1,2", "--requests", "40000", "--rate", "2000", "--keys", "2000",
        "--zipf", "0.8", "--event", "5s:remove:10.0.0.3:8080", "--event", "10s:add:10.0.0.9:8080:2",
        "--event", "15s:fail:10.0.0.1:8080", "--schedulers", "rr,wlc,mh,mh+affinity,sh",
        "--affinity-timeout", "60", "--seed", "3", "--out", str(out_dir))
    assert status == 0, err
    report = json.loads((out_dir / "report.json").read_text())
    assert report["seed"] == 3 and report["affinity_timeout"] == 60
    assert report["traffic"]["requests"] == 40_000 and report["traffic"]["zipf"] == 0.8
    assert report["endpoints"] == [f"10.0.0.{i}:8080" for i in range(1, 10)]
    assert [e["text"] for e in report["events"]] == ["5s:remove:10.0.0.3:8080", "10s:add:10.0.0.9:8080:2",
                                                     "15s:fail:10.0.0.1:8080"]
    # Which endpoints take connections, and with what weight, phase by phase.
    assert report["phases"][0]["weights"] == [1, 2, 1, 2, 1, 2, 1, 2, 0]
    assert report["phases"][3]["weights"] == [0, 2, 0, 2, 1, 2, 1, 2, 2]
    names = [s["name"] for s in report["schedulers"]]
    assert names == ["rr", "wlc", "mh", "mh+affinity", "sh"]
    for s in report["schedulers"]:
        assert sum(s["requests"]) + s["refused"] == 40_000 and s["refused"] == 0
        assert len(s["active"]) == 9 and all(len(row) == len(report["samples"]) for row in s["active"])
        # The removed endpoint gets nothing after 5 s, the added one nothing before 10 s.
        times = report["samples"]
        assert all(a == 0 for a, t in zip(s["active"][8], times) if t < 10)
        assert s["imbalance"]["peak"] >= s["imbalance"]["mean"] >= 1.0
        assert [e["time"] for e in s["events"]] == [5.0, 10.0, 15.0]
        assert s["requests_per_second"] > 0
    rr, wlc, mh, sticky, sh = report["schedulers"]
    # rr ignores the weights, wlc follows them; sh remaps most keys when the list changes.
    assert wlc["imbalance"]["mean"] < rr["imbalance"]["mean"]
    assert sh["events"][0]["moved_share"] > 0.5 > mh["events"][0]["moved_share"]
    # A failure moves only the failed endpoint's keys under Maglev, and under affinity.
    assert set(mh["events"][2]["from"]) == {"10.0.0.1:8080"}
    assert set(sticky["events"][2]["from"]) == {"10.0.0.1:8080"}
    assert sticky["events"][2]["moved_sessions"] == sticky["events"][2]["moved_keys"]
    assert 0.9 < sticky["affinity_hit_rate"] < 1.0 and mh["affinity_hit_rate"] is None
    # The table: a row per scheduler with the same figures, rounded.
    lines = out.splitlines()
    span = report["traffic"]["span"]
    assert 19.5 < span < 20.5
    assert lines[0] == f"40,000 requests over {span:.1f} s, 2,000 keys, 9 endpoints in all, seed 3"
    assert lines[1].split() == ["SCHEDULER", "SIM", "REQ/S", "IMBALANCE", "PEAK", "MOVED@5s", "MOVED@10s",
                                "MOVED@15s", "HITS", "REFUSED"]
    row = dict(zip(names, lines[2:7]))
    assert row["mh"].split()[2:4] == [f"{mh['imbalance']['mean']:.2f}", f"{mh['imbalance']['peak']:.2f}"]
    assert row["mh+affinity"].split()[-2] == f"{100 * sticky['affinity_hit_rate']:.1f}%"
    assert lines[7:] == ["event at 5s: remove 10.0.0.3:8080", "event at 10s: add 10.0.0.9:8080 weight 2",
                         "event at 15s: fail 10.0.0.1:8080"]
    # The pictures: valid PNGs of the documented sizes.
    assert png_size(str(out_dir / "share.png")) == (WIDTH, share_height(5))
    assert png_size(str(out_dir / "imbalance.png")) == (WIDTH, HEIGHT)
    assert png_size(str(out_dir / "moved.png")) == (WIDTH, HEIGHT)
    assert "report.json" in err and "pip install" not in err


def test_without_matplotlib_the_json_and_the_table_are_still_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    status, out, err = simulate_cli(capsys, "--requests", "2000", "--schedulers", "rr,mh", "--out", str(tmp_path))
    assert status == 0
    assert sorted(os.listdir(tmp_path)) == ["report.json"]
    assert out.splitlines()[1].startswith("SCHEDULER")
    assert 'lbcore: note: pictures need matplotlib: pip install "lbcore[plot]"' in err.splitlines()


def test_p2c_ring_and_bounded_loads_run_through_the_simulation(tmp_path, capsys):
    status, out, err = simulate_cli(capsys, "--requests", "2000", "--schedulers", "rr,p2c,ring,mh:balance_factor=1.25",
                                    "--out", str(tmp_path))
    assert status == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    ran = {s["name"]: s for s in report["schedulers"]}
    assert list(ran) == ["rr", "p2c", "ring", "mh:balance_factor=1.25"]
    assert [ran[name]["replay"] for name in ran] == ["sequence", "held", "key", "held"]
    for figures in ran.values():
        assert sum(figures["requests"]) == 2000
    assert "skipped" not in report


def test_a_service_from_a_file_with_its_affinity_timeout(tmp_path, capsys):
    status, out, err = simulate_cli(
        capsys, "--services", os.path.join(EXAMPLES, "services.yaml"), "--service", "api", "--requests", "3000",
        "--rate", "100", "--schedulers", "mh+affinity", "--out", str(tmp_path))
    assert status == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    # api: two endpoints and a quiesced third; ClientIP affinity of 600 s.
    assert report["endpoints"] == ["127.0.0.1:9004", "127.0.0.1:9005", "127.0.0.1:9006"]
    assert report["affinity_timeout"] == 600
    assert report["schedulers"][0]["requests"][2] == 0


@pytest.mark.parametrize("args, message", [
    (["--event", "5s:remove:10.0.0.77:8080"],
     "lbcore: error: events[0]: '5s:remove:10.0.0.77:8080' names 10.0.0.77:8080, which is not in the set at 5 s"),
    (["--event", "5s:explode:10.0.0.1:8080"],
     "lbcore: error: events[0].event: '5s:explode:10.0.0.1:8080' has kind 'explode'; valid: remove, add, fail, recover, weight"),
    (["--schedulers", "rr,fastest"], "lbcore: error: schedulers: 'fastest' is not a scheduler; valid: rr, wrr"),
    (["--schedulers", "dh", "--endpoints", "300"],
     "lbcore: error: scheduler 'dh'.table_size: 256 is too small for 300 endpoints"),
    (["--trace", "examples/trace.csv"], "lbcore: error: --requests: 100 makes synthetic traffic; it does not go with --trace"),
    (["--services", "examples/services.yaml"], "lbcore: error: service: None must name one of the 3 services: web, api, dns"),
    (["--services", "examples/services.yaml", "--service", "www"], "lbcore: error: service: 'www' is not among the services"),
    (["--service", "web"], "lbcore: error: --service: 'web' names a service of --services FILE...; give the files"),
    (["--weights", "1,-2"], "lbcore: error: weights[1].weight: -2 is out of range; valid: 0..2147483647"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(ROOT)
    out_dir = tmp_path / "out"
    status, out, err = simulate_cli(capsys, "--requests", "100", "--rate", "10", *args, "--out", str(out_dir))
    assert status == EXIT_BAD_INPUT
    assert out == "" and not out_dir.exists()
    assert err.splitlines()[0].startswith(message), err


def test_an_output_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    status, out, err = simulate_cli(capsys, "--requests", "100", "--out", str(tmp_path / "taken"))
    assert status == EXIT_BAD_INPUT and out == ""
    assert err == f"lbcore: error: --out: {str(tmp_path / 'taken')!r} is a file; give a directory (it is made if missing)\n"


def test_argument_errors_name_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--rate", "-5"])
    assert exit_.value.code == EXIT_BAD_INPUT
    assert "argument --rate: must be a number above 0, not '-5'" in capsys.readouterr().err


def test_the_example_compares_two_schedulers(tmp_path, capsys, monkeypatch):
    # examples/compare_schedulers.sh, run as its lbcore command line says.
    with open(os.path.join(EXAMPLES, "compare_schedulers.sh")) as file:
        script = file.read()
    command = shlex.split(script[script.index("lbcore simulate"):].replace("\\\n", " "))
    assert command[:2] == ["lbcore", "simulate"]
    monkeypatch.chdir(ROOT)
    args = command[2:]
    args[args.index("--out") + 1] = str(tmp_path)
    status = main(["simulate", *args])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["traffic"]["trace"] == "examples/trace.csv" and report["traffic"]["requests"] == 1500
    wlc, sticky = report["schedulers"]
    assert (wlc["name"], sticky["name"]) == ("wlc", "mh+affinity")
    # Sessions keep their endpoint when one joins; wlc spreads connections, not keys.
    assert sticky["events"][1]["moved_sessions"] == 0 < wlc["events"][1]["moved_keys"]
    assert wlc["imbalance"]["mean"] < sticky["imbalance"]["mean"]
    assert sticky["bytes"] is not None and sum(sticky["bytes"]) == sum(wlc["bytes"]) > 0
    assert [line.split()[0] for line in out.splitlines()[2:4]] == ["wlc", "mh+affinity"]


def test_pure_and_compiled_twins_give_the_same_report(tmp_path, both):
    # The same command in two processes, one on each twin: every figure but the
    # timings must match.
    reports = []
    for pure in (False, True):
        out_dir = tmp_path / ("pure" if pure else "compiled")
        env = {name: value for name, value in os.environ.items() if name != "LBCORE_NO_EXTENSIONS"}
        env.update(PYTHONPATH=ROOT, **({"LBCORE_NO_EXTENSIONS": "1"} if pure else {}))
        result = subprocess.run(
            [sys.executable, "-m", "lbcore", "simulate", "--trace", "examples/trace.csv", "--endpoints", "5",
             "--event", "20s:fail:10.0.0.2:8080", "--event", "30s:weight:10.0.0.4:8080:3",
             "--event", "45s:recover:10.0.0.2:8080", "--schedulers", "rr,wrr,lc,wlc,dh,sh,mh,mh+affinity,wlc+affinity",
             "--affinity-timeout", "10", "--out", str(out_dir)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert result.returncode == 0, result.stderr
        report = json.loads((out_dir / "report.json").read_text())
        assert report.pop("implementation") == ("pure" if pure else "compiled")
        for s in report["schedulers"]:
            for timing in ("seconds", "requests_per_second", "measure_seconds"):
                s.pop(timing)
        reports.append(report)
    assert reports[0] == reports[1]


def test_the_readme_picture_comes_from_the_readme_command(tmp_path, capsys, monkeypatch):
    # README.md shows docs/simulate/share.png and the command under <!-- simulate-picture -->
    # that made it: the command still runs and still makes a picture of that size.
    with open(os.path.join(ROOT, "README.md")) as file:
        text = file.read()
    block = text[text.index("<!-- simulate-picture -->"):].split("```sh\n", 1)[1].split("```", 1)[0]
    command = shlex.split(block.replace("\\\n", " "))
    assert command[:2] == ["lbcore", "simulate"] and command[command.index("--out") + 1] == "docs/simulate"
    assert "![" in text and "](docs/simulate/share.png)" in text
    committed = png_size(os.path.join(ROOT, "docs", "simulate", "share.png"))
    args = command[2:]
    args[args.index("--out") + 1] = str(tmp_path)
    monkeypatch.chdir(ROOT)
    assert main(["simulate", *args]) == 0
    capsys.readouterr()
    schedulers = args[args.index("--schedulers") + 1].split(",")
    assert png_size(str(tmp_path / "share.png")) == committed == (WIDTH, share_height(len(schedulers)))


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)


def test_import_lbcore_and_other_commands_load_no_simulator():
    result = python(
        "import sys, io, contextlib\n"
        "import lbcore\n"
        "from lbcore.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['check', 'examples/services.yaml']) == 0\n"
        "print([m for m in ('lbcore.simulate', 'numpy', 'matplotlib') if m in sys.modules])\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_without_numpy_the_command_says_what_to_install():
    result = python("import sys\nsys.modules['numpy'] = None\nfrom lbcore.cli import main\nsys.exit(main(['simulate']))\n")
    assert result.returncode == 1
    assert result.stderr == 'lbcore: error: lbcore simulate needs numpy: pip install "lbcore[simulate]"\n'
