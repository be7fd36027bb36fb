"""Maintainer sessions: `uvx nox -s NAME` (or `nox` when installed); uv creates the venvs.

* ``tests``      the whole workspace's default test run (what CI runs through `uv run pytest`)
* ``isolated``   each package alone in a fresh venv with only its declared dependencies,
                 running that package's own tests (proves its dependency list is complete)
* ``runtime``    fnl-core + fnl-runtime in a fresh venv, torch not importable, runtime tests
* ``plugin``     installs the example third-party plugin (a backbone and a preset) next to the
                 published packages and checks both, before and after
* ``optional``   without fnl-quant, fnl-eval and onnx(runtime): one-line errors naming the extra
* ``slow``       the tests marked slow (all 23 paper backbones, every preset, long training)
* ``lint``       ruff check + ruff format --check
* ``benchmarks`` the speed/size benchmarks; each prints JSON
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "isolated", "runtime", "plugin", "lint"]

ROOT = Path(__file__).parent
PACKAGES = ["core", "backbones", "necks", "heads", "data", "detector", "quant", "eval", "runtime"]
TEST_TOOLS = ["pytest>=8,<10", "pyyaml>=6,<7"]
EXTRA_TOOLS = ["onnx>=1.16,<2", "onnxruntime>=1.18,<2", "matplotlib>=3.8,<4"]
# Test-only needs of a package's own tests (never of the package itself).
TEST_EXTRAS = {
    "heads": ["numpy>=1.26,<3"],  # the slow per-point loss reference uses numpy
    "runtime": ["onnx>=1.16,<2"],  # builds the stand-in export graph (no torch)
}


def _all_packages() -> list[str]:
    return [str(ROOT / "packages" / f"fnl-{p}") for p in PACKAGES]


def _cache_bytecode(session: nox.Session) -> None:
    """Let the session's processes write .pyc files, inside its venv: where
    PYTHONDONTWRITEBYTECODE is set (CI), every process importing torch or timm would otherwise
    compile them from source again (seconds each; several processes per session)."""
    session.env["PYTHONDONTWRITEBYTECODE"] = ""  # empty = unset for Python
    session.env["PYTHONPYCACHEPREFIX"] = str(Path(session.virtualenv.location) / "pycache")


@nox.session
def tests(session: nox.Session) -> None:
    _cache_bytecode(session)
    session.install(*_all_packages(), *TEST_TOOLS, *EXTRA_TOOLS)
    session.run("pytest", *session.posargs)


@nox.session
@nox.parametrize("package", PACKAGES)
def isolated(session: nox.Session, package: str) -> None:
    """Only fnl-core (the one allowed dependency) plus the package under test."""
    _cache_bytecode(session)
    to_install = {str(ROOT / "packages" / "fnl-core"), str(ROOT / "packages" / f"fnl-{package}")}
    session.install(*sorted(to_install), *TEST_TOOLS, *TEST_EXTRAS.get(package, []))
    tests_dir = ROOT / "tests" / package
    if not any(tests_dir.glob("test_*.py")):
        session.error(f"tests/{package} has no tests")
    session.run("pytest", str(tests_dir), "-p", "no:cacheprovider", *session.posargs)


@nox.session
def runtime(session: nox.Session) -> None:
    """fnl-core + fnl-runtime alone (no torch importable), running fnl-runtime's tests."""
    _cache_bytecode(session)
    session.install(
        str(ROOT / "packages" / "fnl-core"),
        f"{ROOT / 'packages' / 'fnl-runtime'}[video]",
        *TEST_TOOLS,
        *TEST_EXTRAS["runtime"],
    )
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; "
        "sys.exit('torch is importable' if u.find_spec('torch') else 0)",
    )
    session.run("fnl", "run", "--help", silent=True)
    session.run(
        "pytest", str(ROOT / "tests" / "runtime"), "-p", "no:cacheprovider", *session.posargs
    )


@nox.session
def plugin(session: nox.Session) -> None:
    """Install the published packages, then the example plugin; check both states."""
    _cache_bytecode(session)
    session.install(*_all_packages(), *TEST_TOOLS)
    check = str(ROOT / "examples" / "fnl-plugin-example" / "check_plugin.py")
    session.run("python", check, "--expect", "absent")
    session.install(str(ROOT / "examples" / "fnl-plugin-example"))
    session.run("fnl", "list", "backbones")
    session.run("fnl", "list", "presets")
    session.run("python", check, "--expect", "present")  # builds the plugin's own preset
    session.run("fnl", "info", "example.tiny_convnet_b", "--no-flops")
    # the plugin's backbone trains (the cpu-toy recipe skips the options it lacks) and predicts
    tmp = Path(session.create_tmp())
    run, data = tmp / "run", tmp / "toy"
    session.run(
        "fnl", "train", "example.tiny_convnet_b", "--data", "toy", "--out", str(run),
        "--overwrite", "--device", "cpu", "--iters", "3", "--val-split", "", "--no-progress",
        "--data-set", 'num_images={"train": 4, "val": 1}', "width=160", "height=128",
        f"cache_dir={data}",
    )  # fmt: skip
    images = sorted(p for p in data.rglob("*") if p.suffix in (".png", ".jpg"))
    if not images:
        session.error(f"no toy images under {data}")
    session.run(
        "fnl", "predict", str(images[0]), "--weights", str(run / "model.safetensors"),
        "--out", str(tmp / "pred"), "--min-score", "0",
    )  # fmt: skip


@nox.session
def optional(session: nox.Session) -> None:
    """Without fnl-quant, fnl-eval, onnx and onnxruntime installed, the commands that need them
    stop at once with one line naming the extra to install."""
    _cache_bytecode(session)
    needed = ["core", "backbones", "necks", "heads", "data", "detector"]
    session.install(*(str(ROOT / "packages" / f"fnl-{p}") for p in needed))
    tmp = Path(session.create_tmp())
    expected = {
        ("quantize", "mobile_parsing_rcnn_b", "--weights", "w.safetensors"): "fnl-detector[quant]",
        ("train", "mobile_parsing_rcnn_b", "--data", "toy", "--iters", "2"): "fnl-detector[eval]",
        ("export", "mobile_parsing_rcnn_b"): "fnl-detector[export]",
    }
    for args, extra in expected.items():
        out_dir = str(tmp / args[0])
        output = session.run("fnl", *args, "--out", out_dir, success_codes=[2], silent=True)
        error = [line for line in output.splitlines() if line.startswith(f"fnl {args[0]}: error")]
        if len(error) != 1 or f"pip install '{extra}'" not in error[0] or "Traceback" in output:
            session.error(f"fnl {args[0]} without {extra}: expected a one-line error, got {output}")
        if Path(out_dir).exists():
            session.error(f"fnl {args[0]} wrote {out_dir} before failing")
        session.log(error[0])


@nox.session
def slow(session: nox.Session) -> None:
    _cache_bytecode(session)
    session.install(*_all_packages(), *TEST_TOOLS, *EXTRA_TOOLS)
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5,<1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def benchmarks(session: nox.Session) -> None:
    _cache_bytecode(session)
    session.install(*_all_packages(), *EXTRA_TOOLS)
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
