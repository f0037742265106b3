"""The project's own files agree with each other: pyproject.toml is the single source of
package metadata; environment.yml, the set-up script and CI follow it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import write_script

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_is_not_pinned_in_the_package_metadata():
    deps = PYPROJECT["project"]["dependencies"]
    torch = [d for d in deps if re.match(r"torch\b", d)]
    assert torch and "==" not in torch[0]


def test_environment_yml_follows_pyproject():
    env = (ROOT / "environment.yml").read_text()
    setup = PYPROJECT["tool"]["pitchtimbre"]["setup"]
    extras = ",".join(sorted(PYPROJECT["project"]["optional-dependencies"]))
    assert f"-e .[{extras}]" in env
    assert setup["torch"] in env
    for spec in setup["no-deps"]:
        assert spec in env
    python = re.search(r"python=(\d+\.\d+)", env).group(1)
    floor = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, floor.split(".")))


def test_ci_runs_the_readme_test_command():
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["bash scripts/test.sh"]
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/reproduce.sh" in readme


# A stand-in for python3 -m venv: the venv's "python" logs what it is asked and succeeds,
# except that no torch is importable (so the set-up installs one), and, with NO_PIP set, pip
# is missing until ensurepip adds it; scripts on stdin (the settings reader) run for real.
VENV_PYTHON = """#!/usr/bin/env bash
[ "$1" = "-" ] && exec "$REAL_PYTHON" "$@"
echo "$*" >> "$(dirname "$0")/../calls"
case "$*" in
  "-c import torch") exit 1 ;;
  "-m pip --version") [ -z "${NO_PIP:-}" ] ;;
  "-m ensurepip --upgrade") [ -z "${NO_ENSUREPIP:-}" ] ;;
esac
"""
MAKE_VENV = """#!/usr/bin/env bash
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin" && cp "$(dirname "$0")/venv-python" "$3/bin/python" && exit 0
fi
exec "$REAL_PYTHON" "$@"
"""
TOO_OLD = "#!/usr/bin/env bash\nexit 1\n"  # sys.version_info < (3, 11), and anything else fails


def run_setup(
    tmp_path: Path,
    *args: str,
    python: str = MAKE_VENV,
    debian: str | None = None,
    pyproject_end: str = "",
    **env: str,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """scripts/setup.sh in a copy of the project (its script and pyproject.toml, with the
    line ``debian`` in place of its Debian table's when given), with a stand-in for python3
    whose venvs log the commands they are given."""
    write_script(tmp_path / "scripts/setup.sh", (ROOT / "scripts/setup.sh").read_text())
    text = (ROOT / "pyproject.toml").read_text()
    if debian is not None:
        text = re.sub(r"^debian = .*$", debian, text, flags=re.M)
    (tmp_path / "pyproject.toml").write_text(text + pyproject_end)
    write_script(tmp_path / "venv-python", VENV_PYTHON)
    write_script(tmp_path / "python", python)
    run = subprocess.run(
        ["bash", str(tmp_path / "scripts/setup.sh"), *args],
        env={
            "PATH": os.environ["PATH"],
            "PYTHON": str(tmp_path / "python"),
            "REAL_PYTHON": sys.executable,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    return run, tmp_path / ".venv"


def test_setup_installs_what_pyproject_names(tmp_path):
    run, venv = run_setup(tmp_path)
    assert run.returncode == 0, run.stderr
    calls = (venv / "calls").read_text().splitlines()
    setup = PYPROJECT["tool"]["pitchtimbre"]["setup"]
    assert f"-m pip install --quiet {setup['torch']}" in calls  # no torch was importable
    assert "-m pip install --quiet -e .[book,test]" in calls
    assert f"-m pip install --quiet --no-deps {' '.join(setup['no-deps'])}" in calls
    # the kernel the book's chapters run on (_config.yml executes them with 'python3')
    assert any(c.startswith("-m ipykernel install --sys-prefix --name python3 ") for c in calls)


def test_setup_installs_again_when_pyproject_changes_and_only_then(tmp_path):
    installs = "-m pip install --quiet -e .[book,test]"
    run, venv = run_setup(tmp_path)
    assert run.returncode == 0, run.stderr
    run, venv = run_setup(tmp_path)
    assert "is up to date" in run.stdout
    assert (venv / "calls").read_text().count(installs) == 1
    run, venv = run_setup(tmp_path, pyproject_end="# a dependency added\n")
    assert "is up to date" not in run.stdout
    assert (venv / "calls").read_text().count(installs) == 2


@pytest.mark.parametrize("venv_is", ["a broken venv", "a dangling link", "a file"])
def test_setup_makes_an_unusable_venv_again(tmp_path, venv_is):
    """A venv whose creation broke off (its python fails), a link to nothing, a file."""
    venv = tmp_path / ".venv"
    if venv_is == "a broken venv":
        write_script(venv / "bin" / "python", TOO_OLD)
    elif venv_is == "a dangling link":
        venv.symlink_to(tmp_path / "gone")
    else:
        venv.write_text("")
    run, venv = run_setup(tmp_path)
    assert run.returncode == 0, run.stderr
    assert "does not run Python 3.11 or newer: creating it again" in run.stdout
    assert "-m pip install --quiet -e .[book,test]" in (venv / "calls").read_text()


def test_setup_adds_pip_to_a_venv_without_one_instead_of_deleting_it(tmp_path):
    """As `uv venv` makes them: ensurepip adds pip, and the venv (and what is in it) stays."""
    run, venv = run_setup(tmp_path)  # a venv as the set-up makes it
    (venv / "mine").write_text("kept")
    (venv / ".pitchtimbre-setup").unlink()  # and the set-up must run again
    run, venv = run_setup(tmp_path, NO_PIP="1")
    assert run.returncode == 0, run.stderr
    assert "creating" not in run.stdout and (venv / "mine").read_text() == "kept"
    assert "-m ensurepip --upgrade" in (venv / "calls").read_text().splitlines()


def test_setup_stops_rather_than_delete_a_working_venv_it_cannot_add_pip_to(tmp_path):
    run, venv = run_setup(tmp_path)
    (venv / "mine").write_text("kept")
    (venv / ".pitchtimbre-setup").unlink()
    run, venv = run_setup(tmp_path, NO_PIP="1", NO_ENSUREPIP="1")
    assert run.returncode == 1 and (venv / "mine").read_text() == "kept"
    assert "has no pip and ensurepip cannot add it: add pip to it" in run.stderr


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('debs = { g = "g++" }', "KeyError: 'debian'"),  # the key renamed: the reader fails
        ('debian = ["chromium", "g++"]', "must map each package to its command, got 'chromium'"),
    ],
)
def test_setup_stops_at_a_debian_table_it_cannot_read(tmp_path, table, says):
    run, _ = run_setup(tmp_path, "--browser", debian=table)
    assert run.returncode == 1 and says in run.stderr


def test_setup_refuses_a_python_older_than_the_package_needs(tmp_path):
    run, venv = run_setup(tmp_path, python=TOO_OLD)
    assert run.returncode == 1 and not venv.exists()
    assert f"'{tmp_path / 'python'}' is not Python 3.11 or newer" in run.stderr
    assert "PYTHON=" in run.stderr
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"  # the version setup.sh checks


def test_setup_keeps_a_good_venv_whatever_python3_is(tmp_path):
    """A venv made earlier with PYTHON=python3.11 on a machine whose python3 is older."""
    run_setup(tmp_path)
    run, _ = run_setup(tmp_path, python=TOO_OLD)
    assert run.returncode == 0, run.stderr
    assert "is up to date" in run.stdout


def test_setup_installs_the_debian_packages_whose_commands_are_missing(tmp_path):
    fake = tmp_path / "bin"  # apt-get and sudo that log what they are asked
    write_script(fake / "apt-get", f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/apt\n')
    write_script(fake / "sudo", '#!/usr/bin/env bash\nexec "$@"\n')
    debian = 'debian = { bash = "bash", no-such-tool = "no-such-tool-here" }'  # bash is here
    path = f"{fake}:{os.environ['PATH']}"
    run, _ = run_setup(tmp_path, "--browser", debian=debian, PATH=path)
    assert run.returncode == 0, run.stderr
    assert "installing Debian packages: no-such-tool\n" in run.stdout
    assert (
        (tmp_path / "apt")
        .read_text()
        .splitlines()[-1]
        .endswith("install -y -qq --no-install-recommends no-such-tool")
    )
    (fake / "apt-get").write_text("#!/usr/bin/env bash\nexit 100\n")  # not Debian, or no root
    run, _ = run_setup(tmp_path, "--browser", debian=debian, PATH=path)
    assert run.returncode == 0  # the set-up goes on; the checks that need the tool say so
    assert "could not install no-such-tool" in run.stderr


def test_the_debian_table_names_each_packages_command():
    assert PYPROJECT["tool"]["pitchtimbre"]["setup"]["debian"] == {
        "chromium": "chromium",
        "chromium-driver": "chromedriver",  # what tests/test_book_browser.py looks for
        "g++": "g++",
    }


def test_the_book_build_drops_outputs_executed_on_another_profile_setting_or_package(tmp_path):
    """jupyter-cache keys a chapter's outputs on its code cells alone: scripts/build_book.sh
    drops them when the profile, the solutions setting or the package's code changed."""
    write_script(tmp_path / "scripts/build_book.sh", (ROOT / "scripts/build_book.sh").read_text())
    write_script(
        tmp_path / ".venv/bin/python", '#!/usr/bin/env bash\necho "$PITCHTIMBRE_PROFILE"\n'
    )
    write_script(
        tmp_path / ".venv/bin/jupyter-book", '#!/usr/bin/env bash\necho "jupyter-book $*"\n'
    )
    (tmp_path / "pitchtimbre").mkdir()
    (tmp_path / "pitchtimbre/config.py").write_text("A = 1\n")
    executed = tmp_path / "book-out/_build/.jupyter_cache"

    def build(**env: str) -> tuple[str, bool]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PITCHTIMBRE_")}
        run = subprocess.run(
            ["bash", str(tmp_path / "scripts/build_book.sh")],
            env={
                **environment,
                "PITCHTIMBRE_BOOK_OUT": "book-out",
                "PITCHTIMBRE_PROFILE": "ci",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert "jupyter-book build -W -n --keep-going --path-output book-out ." in run.stdout
        kept = executed.is_dir()
        executed.mkdir(parents=True, exist_ok=True)  # what the build leaves to the next one
        return run.stdout, kept

    build()
    said, kept = build()  # the same again: the outputs are reused
    assert kept and "dropping" not in said
    for change in ({"PITCHTIMBRE_PROFILE": "cpu"}, {"PITCHTIMBRE_SOLUTIONS": "1"}, "code"):
        build()  # each change alone, from the same build
        if change == "code":
            (tmp_path / "pitchtimbre/config.py").write_text("A = 2\n")
            change = {}
        said, kept = build(**change)
        assert "dropping executed outputs" in said and not kept, change
        said, kept = build(**change)
        assert kept and "dropping" not in said
        assert (
            (tmp_path / "book-out/_build/.executed-with")
            .read_text()
            .startswith(f"profile={change.get('PITCHTIMBRE_PROFILE', 'ci')} ")
        )


def run_main_job(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/reproduce.sh in a copy of the project whose set-up, book build and python
    only say what they were given."""
    write_script(tmp_path / "scripts/reproduce.sh", (ROOT / "scripts/reproduce.sh").read_text())
    write_script(tmp_path / "scripts/setup.sh", 'echo "setup"\n')
    write_script(
        tmp_path / "scripts/build_book.sh",
        'echo "book on ${PITCHTIMBRE_PROFILE:-its own}"\n'
        'echo "solutions ${PITCHTIMBRE_SOLUTIONS:-unset}, cache ${PITCHTIMBRE_CACHE:-unset}"\n',
    )
    write_script(tmp_path / ".venv/bin/python", '#!/usr/bin/env bash\necho "python $*"\n')
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PITCHTIMBRE_")}
    return subprocess.run(
        ["bash", str(tmp_path / "scripts/reproduce.sh"), *args],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("args", [["--profile", "ci"], ["--quiet", "--profile=ci"]])
def test_the_main_job_builds_the_book_on_the_profile_it_reproduces(tmp_path, args):
    run = run_main_job(tmp_path, *args)
    assert run.returncode == 0, run.stderr
    said = run.stdout.splitlines()
    assert f"python -m pitchtimbre reproduce --out results {' '.join(args)}" in said
    assert "book on ci" in said


def test_the_main_job_shows_the_solutions_and_keeps_its_cache_in_the_project(tmp_path):
    said = run_main_job(tmp_path, "--profile", "ci").stdout.splitlines()
    assert f"solutions 1, cache {tmp_path}/.cache" in said
    said = run_main_job(
        tmp_path, "--profile", "ci", PITCHTIMBRE_SOLUTIONS="0", PITCHTIMBRE_CACHE="/elsewhere"
    ).stdout.splitlines()
    assert "solutions 0, cache /elsewhere" in said  # a student copy, a shared cache


@pytest.mark.parametrize("option", ["--seeds 2", "--steps=10", "--source notes/"])
def test_the_main_job_refuses_options_its_book_cannot_follow(tmp_path, option):
    run = run_main_job(tmp_path, *option.split())
    flag = option.split()[0].split("=")[0]
    assert run.returncode == 2 and run.stdout == ""  # before the set-up
    assert f"reproduce.sh: {flag} would give results the book does not show" in run.stderr
    assert f"python -m pitchtimbre reproduce --out DIR {flag}" in run.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--profile"], "--profile must be ci, cpu or gpu, got ''"),
        (["--profile=laptop"], "--profile must be ci, cpu or gpu, got 'laptop'"),
        (["--out", "elsewhere"], "the main job writes to results/"),
        (["--prof", "ci"], "unknown option '--prof'; it takes --profile P"),
        (["--parallel", "2", "--seed", "1"], "unknown option '--seed'"),
    ],
)
def test_the_main_job_checks_its_options_before_the_set_up(tmp_path, args, says):
    run = run_main_job(tmp_path, *args)
    assert run.returncode == 2 and run.stdout == "" and f"reproduce.sh: {says}" in run.stderr


def test_the_main_job_checks_the_profile_it_is_given_by_the_environment(tmp_path):
    run = run_main_job(tmp_path, PITCHTIMBRE_PROFILE="laptop")
    assert run.returncode == 2 and run.stdout == ""
    assert "PITCHTIMBRE_PROFILE must be ci, cpu or gpu, got 'laptop'" in run.stderr
    run = run_main_job(tmp_path, "--parallel", "2", PITCHTIMBRE_PROFILE="ci")
    assert run.returncode == 0 and "book on ci" in run.stdout.splitlines()


def test_the_command_line_takes_whole_option_names_only():
    """An abbreviation (--prof ci) would train on one profile while reproduce.sh, which
    looks for --profile, built the book on another."""
    from pitchtimbre.cli import make_parser

    parser = make_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "--prof", "ci", "--out", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--verb", "reproduce", "--out", "x"])
    assert parser.parse_args(["reproduce", "--profile", "ci", "--out", "x"]).profile == "ci"


def test_the_readme_installs_the_torch_the_set_up_would():
    """The README's CPU-wheel command pins the same torch as [tool.pitchtimbre.setup]."""
    readme = " ".join((ROOT / "README.md").read_text().split())  # across line breaks
    torch = PYPROJECT["tool"]["pitchtimbre"]["setup"]["torch"]
    pins = re.findall(r"pip install (torch==[\w.+]+) --index-url", readme)
    assert pins == [torch]


# Stand-ins for scripts/lowest_versions.sh: python3 is MAKE_VENV, whose venvs get a "python"
# whose pip install of uv leaves a "uv" that logs its arguments and writes a fixed resolution;
# the project's scripts/test.sh records where it ran and the pins pip was given.
LOWEST_VENV_PYTHON = """#!/usr/bin/env bash
if [ "$*" = "-m pip install --quiet uv" ]; then
  printf '%s\\n' '#!/usr/bin/env bash' \\
    'echo "$*" > "$(dirname "$0")/../uv-args"' \\
    'while [ "$1" != "--output-file" ]; do shift; done' \\
    'cp "$LOWEST_RESOLUTION" "$2"' > "$(dirname "$0")/uv"
  chmod +x "$(dirname "$0")/uv"
fi
"""
LOWEST_TEST_SH = """#!/usr/bin/env bash
{ echo "ran in $PWD"; cat "$PIP_CONSTRAINT"; } > "$TEST_SH_LOG"
"""
RESOLUTION = """numpy==1.24.0
    # via pitchtimbre
torch==2.13.0
    # via pitchtimbre
nvidia-cublas-cu12==12.8.4.1 ; sys_platform == 'linux'
triton==3.5.0 ; sys_platform == 'linux'
librosa==0.11.0
"""


def run_lowest_versions(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/lowest_versions.sh in a git repository holding it, pyproject.toml and a
    stand-in test.sh, with stand-ins for python3's venvs and uv."""
    project = tmp_path / "project"
    write_script(
        project / "scripts/lowest_versions.sh", (ROOT / "scripts/lowest_versions.sh").read_text()
    )
    write_script(project / "scripts/test.sh", LOWEST_TEST_SH)
    write_script(tmp_path / "venv-python", LOWEST_VENV_PYTHON)  # MAKE_VENV's venvs' python
    (project / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    if not (project / ".git").exists():
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "project"]):
            subprocess.run([*git, "-C", str(project), *command], check=True)
    (tmp_path / "resolution.txt").write_text(RESOLUTION)
    return subprocess.run(
        ["bash", str(project / "scripts/lowest_versions.sh"), *args],
        env={
            "PATH": os.environ["PATH"],
            "PYTHON": str(write_script(tmp_path / "python", MAKE_VENV)),
            "REAL_PYTHON": sys.executable,
            "LOWEST_RESOLUTION": str(tmp_path / "resolution.txt"),
            "TEST_SH_LOG": str(tmp_path / "test-sh.log"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lowest_versions_runs_the_test_command_in_a_clone_on_the_floors(tmp_path):
    run = run_lowest_versions(tmp_path, str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    uv = (tmp_path / "out/uv/uv-args").read_text().split()
    assert uv[:3] == ["pip", "compile", "pyproject.toml"]
    extras = {a.removeprefix("--extra=") for a in uv if a.startswith("--extra=")}
    assert extras == set(PYPROJECT["project"]["optional-dependencies"])
    assert uv[uv.index("--resolution") + 1] == "lowest-direct"
    assert uv[uv.index("--python-version") + 1] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    torch_pin = PYPROJECT["tool"]["pitchtimbre"]["setup"]["torch"]
    assert (tmp_path / "out/torch.txt").read_text().strip() == torch_pin
    ran_in, *pins = (tmp_path / "test-sh.log").read_text().splitlines()
    assert ran_in == f"ran in {tmp_path / 'out/repo'}"  # the clone's test.sh, not the project's
    # every pin but torch and PyPI's CUDA build of it, which the set-up installs itself
    assert [p for p in pins if not p.lstrip().startswith("#")] == [
        "numpy==1.24.0",
        "librosa==0.11.0",
    ]
    assert "numpy 1.24.0, librosa 0.11.0" in run.stdout  # the floors it lists, torch not among them


def test_lowest_versions_refuses_a_directory_that_holds_a_clone(tmp_path):
    assert run_lowest_versions(tmp_path, str(tmp_path / "out")).returncode == 0
    (tmp_path / "test-sh.log").unlink()
    run = run_lowest_versions(tmp_path, str(tmp_path / "out"))
    assert run.returncode == 2 and "out/repo exists" in run.stderr
    assert not (tmp_path / "test-sh.log").exists()
