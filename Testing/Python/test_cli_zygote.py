"""The warm CLI server (cli_zygote): a child that fails before vococore runs says so in its own stderr with status 1,
its named-pipe stdout still ends, and the server answers the next command."""

from __future__ import annotations

from cli_zygote import warm_cli


def test_a_child_failing_before_the_cli_reports_it_and_the_server_goes_on(tmp_path):
    gone = tmp_path / "gone"  # the child's working folder, missing: os.chdir fails before vococore is called
    failed = warm_cli().run(["--help"], cwd=gone)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "FileNotFoundError" in failed.stderr and str(gone) in failed.stderr
    streamed = warm_cli().start(["info", str(tmp_path / "missing.nii.gz")], env={"OMP_NUM_THREADS": "x"})
    out, err = streamed.communicate(timeout=60)  # the child opened its stdout before failing: no hang
    assert streamed.returncode == 1 and out == "" and "ValueError" in err
    after = warm_cli().run(["--help"], cwd=tmp_path)
    assert after.returncode == 0 and "usage: vococore" in after.stdout
