"""The CLI prints roilab's own progress, results and errors; library messages go to a log
file (issue 12 item 8): Python warnings, library loggers (bound before or after the command
starts), library tqdm bars and prints, C++-style lines written straight to fd 2, and what a
child process prints."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hostile_run import hostile_run

from engine.cli import workloads
from engine.cli.main import main
from engine.core.settings import REPO_ROOT
from engine.store.store import Store

# What each kind of library output says; none may reach the terminal, each must reach the log.
NOISE = {
    "warning": "FutureWarning: `torch_dtype` is deprecated! Use `dtype` instead!",
    "logger": "transformers logger: generation flags are not valid",
    "early handler": "is an Enum subclass and is now natively supported by torch.compile",
    "library print": "noisylib prints to stdout",
    "library bar": "noisylib loading shards",
    "fd 2": "W1130 08:51:00.122000 17092 torch/csrc/fake.cpp:630] a C++ line",
    "child": "a child process of the library says hello",
}
# Said at interpreter exit by a handler registered during the command (vLLM shuts its engines
# down so): the `roilab` process keeps library output in the log until then.
AT_EXIT = "noisylib shutting down its engine at exit"

GLOG_LINE = re.compile(r"\s*[IWEF]\d{4} \d\d:\d\d:\d\d")  # torch's C++/logging line format

# A stand-in library, imported before the command starts (as torch is by a test session or a
# long-lived process): it binds a stream handler to the stderr of then, like torch's logger.
NOISY_LIB = f'''
import atexit, logging, os, subprocess, sys, warnings

from tqdm import tqdm

early = logging.getLogger("noisylib.early")
early.addHandler(logging.StreamHandler())  # bound to sys.stderr now, as torch does
early.propagate = False
NOISE = {NOISE!r}


def talk(at_exit=False):
    if at_exit:
        atexit.register(logging.getLogger("noisylib.early").warning, {AT_EXIT!r})
    warnings.warn(NOISE["warning"], FutureWarning, stacklevel=1)
    logging.getLogger("transformers").warning(NOISE["logger"])
    early.warning(NOISE["early handler"])
    print(NOISE["library print"])
    for _ in tqdm(range(3), desc=NOISE["library bar"]):
        pass
    os.write(2, (NOISE["fd 2"] + "\\n").encode())
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write(%r)" % NOISE["child"]])
'''


@pytest.fixture
def noisy(tmp_path, settings, monkeypatch):
    """The CLI's environment over a fresh data dir, with noisylib importable."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "noisylib.py").write_text(NOISY_LIB)
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), str(REPO_ROOT)]))
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    for var in ("ROILAB_LOG_FILE", "ROILAB_VERBOSE"):
        monkeypatch.delenv(var, raising=False)
    log = tmp_path / "prompts.jsonl"
    log.write_text('{"prompt": "hi"}\n{"prompt": ""}\n')
    return SimpleNamespace(settings=settings, log=log,
                           log_file=settings.resolved_log_file())


# The real CLI in a real process (real file descriptors): `roilab ingest` whose store opening
# first lets noisylib talk, as a model load lets torch and transformers talk.
CLI = """
import sys
import noisylib
import engine.cli.workloads as w
real = w.open_store
def open_store(settings):
    noisylib.talk(at_exit=True)
    return real(settings)
w.open_store = open_store
from engine.cli.main import main
sys.exit(main())
"""


def _roilab(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *argv], cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=120, env=env)


def _assert_clean(terminal: str, log_file: Path, at_exit: bool = False) -> None:
    logged = log_file.read_text()
    for kind, line in [*NOISE.items(), *([("at exit", AT_EXIT)] if at_exit else [])]:
        assert line not in terminal, f"{kind} reached the terminal:\n{terminal}"
        assert line in logged, f"{kind} is not in the log {log_file}:\n{logged}"


def test_a_cli_command_keeps_library_output_off_the_terminal(noisy):
    done = _roilab("ingest", str(noisy.log), "--name", "clean")
    assert done.returncode == 0, done.stderr
    assert "Workload 1 'clean': 1 requests" in done.stdout  # roilab's result
    assert "line 2" in done.stderr  # roilab's own message about the rejected row
    assert f"library messages: {noisy.log_file}" in done.stderr.splitlines()
    _assert_clean(done.stdout + done.stderr, noisy.log_file, at_exit=True)
    assert "roilab ingest " in noisy.log_file.read_text()  # the command's header line
    assert noisy.log_file.parent.joinpath(".gitignore").read_text() == "*\n"


def test_a_roilab_error_still_reaches_stderr(noisy):
    done = _roilab("ingest", str(noisy.log.with_name("missing.jsonl")))
    assert done.returncode == 2
    assert "error: No such file" in done.stderr and "Traceback" not in done.stderr


def test_verbose_and_a_chosen_log_file(noisy, tmp_path):
    chosen = tmp_path / "elsewhere" / "libs.log"
    done = _roilab("--verbose", "ingest", str(noisy.log),
                   env={**os.environ, "ROILAB_LOG_FILE": str(chosen)})
    assert done.returncode == 0, done.stderr
    for kind in ("warning", "logger", "early handler", "fd 2", "child"):
        assert NOISE[kind] in done.stderr, kind
    assert not chosen.exists() and "library messages" not in done.stderr
    done = _roilab("ingest", str(noisy.log), env={**os.environ, "ROILAB_LOG_FILE": str(chosen)})
    assert done.returncode == 0, done.stderr
    _assert_clean(done.stdout + done.stderr, chosen, at_exit=True)
    assert not chosen.parent.joinpath(".gitignore").exists()  # a folder of the user's


def test_in_process_library_output_goes_to_the_log_and_progress_to_the_terminal(
        noisy, monkeypatch, capfd):
    """main() inside this process (as the other CLI tests call it): the same split, the
    progress bar drawn by `roilab pilot`'s own code, and everything put back afterwards."""
    import noisylib

    from engine.cli.pilot import _watched

    run_id = hostile_run(Store(noisy.settings.resolved_db_url()))
    store = Store(noisy.settings.resolved_db_url())

    def pilot(progress):
        progress(SimpleNamespace(fraction=0.5, variant="baseline", message="generating 1 of 2"))
        noisylib.talk()
        progress(SimpleNamespace(fraction=1.0, variant="baseline", message="done"))
        return store.get_run(run_id)

    def fake_store(settings):  # `roilab ingest` here only carries the pilot's progress bar
        _watched(run_id, settings, pilot)
        return store

    monkeypatch.setattr(workloads, "open_store", fake_store)
    # A library imported by an earlier test bound its handler to the stderr pytest had in
    # place then (transformers' "[transformers]" handler, in the full suite); imported in a
    # process of its own, it binds to that process's stderr. Make it so here.
    for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in getattr(lg, "handlers", ()):
            if type(h) is logging.StreamHandler and h.stream not in (sys.stdout, sys.stderr):
                monkeypatch.setattr(h, "stream", sys.stderr)
    stderr, stdout = sys.stderr, sys.stdout
    assert main(["ingest", str(noisy.log)]) == 0
    out, err = capfd.readouterr()
    assert "baseline: generating 1 of 2" in err and "100%" in err  # the bar, on the terminal
    assert "+1+1 variant" in out  # the run's table
    _assert_clean(out + err, noisy.log_file)
    assert sys.stderr is stderr and sys.stdout is stdout
    os.write(2, b"after the command\n")
    assert "after the command" in capfd.readouterr().err  # fd 2 is the terminal again


@pytest.mark.slow
def test_a_real_pilot_prints_no_library_lines(local_ray_stopped, tmp_path):
    """A tiny real `roilab pilot` (baseline, torchao int8 weights), run the default way (a
    Ray task on a local head it starts): torch's, torchao's and Ray's own messages (`W1130 ...
    is an Enum subclass`, glog style) go to the log, not the terminal."""
    model_settings = local_ray_stopped
    log = tmp_path / "log.jsonl"
    log.write_text('{"prompt": "What is the capital of France?", "reference": "Paris"}\n'
                   '{"prompt": "What is 2+2?", "reference": "4"}\n')
    env = {**os.environ, "ROILAB_DATA_DIR": str(model_settings.data_dir),
           "ROILAB_DB_URL": model_settings.resolved_db_url()}
    env.pop("ROILAB_LOG_FILE", None)
    env.pop("ROILAB_VERBOSE", None)
    roilab = [sys.executable, "-m", "engine.cli.main"]
    subprocess.run([*roilab, "ingest", str(log)], env=env, cwd=REPO_ROOT, check=True,
                   capture_output=True)
    done = subprocess.run([*roilab, "pilot", "--workload", "1", "--variants", "int8",
                           "--max-new-tokens", "4"], env=env, cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    terminal = done.stdout + done.stderr
    assert "int8-weights" in done.stdout and "100%" in done.stderr  # results and progress
    for library_line in ("Enum subclass", "UserWarning", "FutureWarning", "torch_dtype",
                         "Traceback"):
        assert library_line not in terminal, terminal
    assert not [ln for ln in terminal.replace("\r", "\n").splitlines()
                if GLOG_LINE.match(ln)], terminal  # W1130 08:51:00.122000 ...
    log_file = model_settings.resolved_log_file()
    assert f"library messages: {log_file}" in done.stderr
    logged = log_file.read_text()
    assert "Enum subclass" in logged and "roilab pilot --workload 1" in logged
