"""``fnl eval --model/--weights``: predict a toy split and score it; ``--model`` resolution.

Uses the tiny stand-in detector and a 3-image toy split generated into a temporary cache, so
nothing is downloaded: named models point at ``file:`` URLs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from fnl_core import registry
from fnl_core.cli import main
from fnl_core.groups import MODELS
from fnl_core.models import ModelCard, safetensors_metadata

TOY = ["--data", "toy", "--data-set", 'num_images={"train": 2, "val": 3}']


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


#: fnl eval is fnl-eval's command and the toy data is fnl-data's: both are absent when
#: fnl-detector's tests run alone (nox -s isolated).
needs_eval = pytest.mark.skipif(
    bool(_missing("fnl_eval", "fnl_data")),
    reason=f"needs {', '.join(_missing('fnl_eval', 'fnl_data'))} (not installed here)",
)
needs_quant = pytest.mark.skipif(
    bool(_missing("fnl_quant")), reason="needs fnl_quant (not installed here)"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FNL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny(tiny_components, tmp_path: Path, cache: Path):
    """Weights of the tiny detector (seeded), with its spec in the safetensors metadata."""
    import torch
    from detector_standins import tiny_spec

    from fnl_detector import build_detector, load_spec
    from fnl_detector.weights import save_weights

    torch.manual_seed(0)
    spec = load_spec(tiny_spec())
    model = build_detector(spec)
    path = tmp_path / "tiny.safetensors"
    save_weights(model.state_dict(), path, {"spec": json.dumps(spec.to_dict())})
    return path


def _json_out(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out)


@needs_eval
def test_eval_weights_json_is_percent_of_training_evaluation(tiny: Path, capsys) -> None:
    import torch

    from fnl_detector.loading import load_model
    from fnl_detector.train.evaluate import build_evaluator, evaluate_model
    from fnl_detector.train.sources import parse_data

    assert main(["eval", "--weights", str(tiny), *TOY, "--json", "--no-progress"]) == 0
    out = _json_out(capsys)
    assert list(out) == ["bbox", "segm", "gps", "gpsm"]
    # the same numbers as the training loop's evaluation, in percent
    spec = json.loads(safetensors_metadata(tiny)["spec"])
    model = load_model(spec, tiny)
    source = parse_data("toy", ['num_images={"train": 2, "val": 3}'])
    dataset = source.build("val")
    metrics = evaluate_model(
        model, dataset, torch.device("cpu"), None, tiny.parent, evaluator=build_evaluator("toy")
    )
    for metric in out:
        for stat, value in metrics[metric].items():
            expected = round(value * 100, 3) if value >= 0 else value
            assert out[metric][stat] == pytest.approx(expected, abs=1e-9), (metric, stat)


@needs_eval
def test_eval_threads_given_or_chosen_from_the_load(tiny: Path, capsys, monkeypatch) -> None:
    import torch

    from fnl_detector.train import recipes

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(recipes.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(recipes.os, "getloadavg", lambda: (5.0, 5.0, 5.0))  # a busy machine
    argv = ["eval", "--weights", str(tiny), *TOY, "--metrics", "bbox", "--json", "--no-progress"]
    try:
        torch.set_num_threads(2)
        assert main([*argv, "--device", "cpu"]) == 0
        assert torch.get_num_threads() == 1
        assert main([*argv, "--device", "cpu", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        capsys.readouterr()
        assert main([*argv, "--threads", "0"]) == 2
        assert "--threads must be a positive number" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


@needs_eval
def test_eval_metrics_subset(tiny: Path, capsys) -> None:
    argv = ["eval", "--weights", str(tiny), *TOY, "--metrics", "bbox,gps", "--json"]
    assert main([*argv, "--no-progress"]) == 0
    assert list(_json_out(capsys)) == ["bbox", "gps"]


@needs_eval
def test_eval_named_model_downloads_once(tiny: Path, cache: Path, capsys) -> None:
    sha = hashlib.sha256(tiny.read_bytes()).hexdigest()
    card = ModelCard(name="tiny_named", weights=tiny.as_uri(), sha256=sha, reported={"bbox": 1.0})
    with registry.registered(MODELS, "tiny_named", card):
        argv = ["eval", "--model", "tiny_named", *TOY, "--json", "--no-progress"]
        assert main(argv) == 0
        first = _json_out(capsys)
        cached = cache / "models" / "tiny_named" / "tiny.safetensors"
        assert cached.is_file()
        tiny.unlink()  # the second run must use the cache
        assert main(argv) == 0
        assert _json_out(capsys) == first


@needs_eval
@needs_quant
def test_eval_int8_runs_the_quantized_model(tiny: Path, capsys) -> None:
    argv = ["eval", "--weights", str(tiny), *TOY, "--json", "--no-progress"]
    assert main([*argv, "--int8", "--calibration-images", "2"]) == 0
    out = _json_out(capsys)
    assert set(out) == {"bbox", "segm", "gps", "gpsm"}
    err = capsys.readouterr().err
    assert "error" not in err


@needs_eval
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weights", "W", "--gt", "g.json", "--results", "r.json", *TOY], "not both"),
        (["--spec", "x", *TOY], "needs --model NAME or --weights PATH"),
        (["--weights", "{tiny}"], "needs --data toy"),
        (["--weights", "{tiny}", *TOY, "--int8-weights", "d"], "--int8-weights needs --int8"),
        (["--weights", "{tiny}", *TOY, "--max-images", "0"], "--max-images must be a positive"),
        (["--gt", "g.json", "--results", "r.json", "--int8"], "--int8 only apply"),
        ([], "nothing to evaluate"),
        (["--model", "tiny_missing", *TOY], "unknown fnl.models component 'tiny_missing'"),
        (["--model", "m", "--data", "nosuchdata"], "unknown fnl.datasets component"),
        (["--weights", "{tiny}", "--spec", "x.json", "--model", "m", *TOY], "already fixes"),
    ],
)
def test_eval_option_errors_are_one_line(tiny: Path, capsys, argv, message) -> None:
    argv = [a.replace("{tiny}", str(tiny)) for a in argv]
    card = ModelCard(name="m", weights=tiny.as_uri())
    with registry.registered(MODELS, "m", card):
        assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err


@needs_eval
def test_eval_spec_error_comes_before_prediction(tiny: Path, capsys) -> None:
    assert main(["eval", "--weights", str(tiny), *TOY, "--set", "rpn.nosuch=1"]) == 2
    captured = capsys.readouterr()
    assert "rpn.nosuch" in captured.err and "predicting" not in captured.err


@needs_eval
def test_eval_without_fnl_detector_names_the_package(monkeypatch, capsys, tmp_path) -> None:
    real = registry.entry_points

    def without_fnl_detector(group):
        return [ep for ep in real(group=group) if ep.dist.metadata["Name"] != "fnl-detector"]

    monkeypatch.setattr(registry, "entry_points", lambda group: without_fnl_detector(group))
    assert main(["eval", "--weights", str(tmp_path / "w.safetensors"), *TOY]) == 2
    err = capsys.readouterr().err
    assert "needs the fnl-detector package" in err and "\n" not in err.strip()


# ---------------------------------------------------------------- resolve_model
def test_resolve_weights_reads_spec_metadata_then_spec_json(tiny: Path, tmp_path: Path) -> None:
    from fnl_core.errors import InputError
    from fnl_detector.loading import resolve_model
    from fnl_detector.spec import load_spec
    from fnl_detector.weights import save_weights

    resolved = resolve_model(weights=str(tiny))
    assert resolved.weights == tiny and resolved.spec["backbone"]["type"] == "tiny_backbone"
    # a training run: weights without metadata, spec.json in the run folder
    from safetensors.torch import load_file

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "iter_0000010" / "model.safetensors"
    ckpt.parent.mkdir(parents=True)
    save_weights(load_file(tiny), ckpt)
    with pytest.raises(InputError, match="no --spec given"):
        resolve_model(weights=str(ckpt))
    (run / "spec.json").write_text(json.dumps(resolved.spec))
    again = resolve_model(weights=str(ckpt))
    assert load_spec(again.spec) == load_spec(resolved.spec)
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_model(weights=str(tmp_path / "missing.safetensors"))


def test_resolve_model_with_local_weights_and_spec_only(tiny: Path, tmp_path: Path) -> None:
    from detector_standins import tiny_spec

    from fnl_core.errors import InputError
    from fnl_detector.loading import resolve_model

    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec()))
    card = ModelCard(name="manual_only", spec=str(spec_file), download_page="https://x.invalid/p")
    with registry.registered(MODELS, "manual_only", card):
        with pytest.raises(InputError, match="--weights PATH"):
            resolve_model(model="manual_only")
        resolved = resolve_model(model="manual_only", weights=str(tiny))
    assert resolved.weights == tiny and resolved.label == "manual_only"
    untrained = resolve_model(spec=str(spec_file), require_weights=False)
    assert untrained.weights is None
    with pytest.raises(InputError, match="no model given"):
        resolve_model(spec=str(spec_file))


# ---------------------------------------------------------------- --model in other commands
@pytest.mark.parametrize("command", ["quantize", "export"])
def test_commands_accept_model(command: str) -> None:
    from fnl_core.cli import build_parser

    args = build_parser().parse_args([command, "--model", "some_model", "--out", "o"])
    assert args.model == "some_model" and args.spec is None


def test_bench_times_named_models(tiny: Path, tmp_path: Path, capsys) -> None:
    from detector_standins import tiny_spec

    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec()))
    card = ModelCard(name="tiny_card", spec=str(spec_file), weights="https://x.invalid/w.pth")
    argv = ["bench", str(spec_file), "--model", "tiny_card", "--size", "96", "--detections", "3"]
    argv += ["--runs", "1", "--warmup", "0", "--json", "--set", "rpn.post_nms_top_n_test=60"]
    with registry.registered(MODELS, "tiny_card", card):
        assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [str(spec_file), "tiny_card"]
    assert rows[0]["params"] == rows[1]["params"]
    assert main(["bench"]) == 2
    assert "nothing to time" in capsys.readouterr().err


@pytest.mark.slow
@needs_eval
@needs_quant
def test_quantize_named_model_then_eval_the_saved_int8(tiny: Path, tmp_path: Path, capsys):
    card = ModelCard(name="tiny_named", weights=tiny.as_uri())
    out = tmp_path / "int8"
    with registry.registered(MODELS, "tiny_named", card):
        argv = ["quantize", "--model", "tiny_named", *TOY, "--out", str(out), "--size", "64"]
        argv += ["--detections", "2", "--runs", "1", "--q-set", "num_calibration_images=2"]
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["calibration_images"] == 2 and (out / "model_int8.pt").is_file()
        argv = ["eval", "--model", "tiny_named", "--int8", "--int8-weights", str(out), *TOY]
        assert main([*argv, "--json", "--no-progress"]) == 0
        assert set(_json_out(capsys)) == {"bbox", "segm", "gps", "gpsm"}
