"""A third-party plugin installed into a separate environment shows up, builds, and its preset
works.

The temporary environment sees the workspace's packages through a ``.pth`` file and gets the
example plugin installed into it for real (built as a wheel from examples/fnl-plugin-example),
so the plugin is discovered only through its installed entry point metadata. The plugin's own
``check_plugin.py`` (also what ``nox -s plugin`` runs) checks both states.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "fnl-plugin-example"
CHECK_PLUGIN = str(PLUGIN / "check_plugin.py")

CHECK = textwrap.dedent(
    """
    import json, sys
    from fnl_core import registry
    from fnl_core.spec import resolve_component
    out = {"names": registry.names("fnl.backbones")}
    try:
        cfg = resolve_component("fnl.backbones", {"type": "tiny_convnet", "width": 8})
    except Exception as exc:
        out["error"] = str(exc)
    else:
        import torch
        net = cfg.build()
        feats = net(torch.zeros(1, 3, 64, 64))
        out["shapes"] = {k: list(v.shape) for k, v in feats.items()}
        out["announced"] = {k: [s.channels, s.stride] for k, s in net.output_shape().items()}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to create the temporary plugin environment")
    env_dir = tmp_path_factory.mktemp("plugin-env") / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    workspace_paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # `import` lines in a .pth run at start-up; addsitedir also processes the workspace's own
    # .pth files (the editable installs of the fnl packages).
    lines = [f"import site; site.addsitedir({p!r})" for p in workspace_paths]
    (Path(purelib) / "fnl_workspace.pth").write_text("\n".join(lines) + "\n")
    return uv, python


def _run(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), *args], check=False, capture_output=True, text=True, timeout=300
    )


def test_plugin_is_unknown_before_and_works_after_install(plugin_env):
    uv, python = plugin_env

    before = json.loads(_run(python, "-c", CHECK).stdout)
    assert "example.tiny_convnet" not in before["names"]
    assert "unknown fnl.backbones component 'tiny_convnet'" in before["error"]
    listing = _run(python, "-m", "fnl_core.cli", "list", "backbones")
    assert listing.returncode == 0 and "tiny_convnet" not in listing.stdout
    absent = _run(python, CHECK_PLUGIN, "--expect", "absent")
    assert absent.returncode == 0, absent.stderr

    subprocess.run(
        [uv, "pip", "install", "-q", "--no-deps", "--python", str(python), str(PLUGIN)],
        check=True,
    )
    for group, name in (
        ("backbones", "example.tiny_convnet"),
        ("presets", "example.tiny_convnet_b"),
    ):
        listing = _run(python, "-m", "fnl_core.cli", "list", group)
        assert listing.returncode == 0, listing.stderr
        row = next(line for line in listing.stdout.splitlines() if name in line)
        assert "fnl-plugin-example" in row

    after = json.loads(_run(python, "-c", CHECK).stdout)
    assert "error" not in after, after
    assert after["shapes"] == {
        "c2": [1, 8, 16, 16],
        "c3": [1, 16, 8, 8],
        "c4": [1, 32, 4, 4],
        "c5": [1, 64, 2, 2],
    }
    assert after["announced"] == {"c2": [8, 4], "c3": [16, 8], "c4": [32, 16], "c5": [64, 32]}

    present = _run(python, CHECK_PLUGIN, "--expect", "present")
    assert present.returncode == 0, present.stderr
    assert "ok: preset example.tiny_convnet_b (fnl-plugin-example 0.1.0) built and ran" in (
        present.stdout
    )
