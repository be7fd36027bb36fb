"""Ship a training run as a named model: weights with their spec, and an updated card.

``python -m fnl_detector.model_zoo.pack RUN_DIR [--name NAME] [--eval-json FILE]`` copies
``RUN_DIR/model.safetensors`` (or the newest checkpoint) to ``<name>.safetensors`` in this
folder with the run's ``spec.json`` stored in the safetensors metadata (``spec``), so
``--model NAME`` needs nothing else, then writes the file's sha256 and size into the card
``<name>.json`` (and, from ``--eval-json``, the output of ``fnl eval --json``, the reported
accuracy). Weights are written atomically; nothing is executed from the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fnl_core.download import file_sha256
from fnl_core.models import METRICS, ModelCard

HERE = Path(__file__).resolve().parent


def run_weights(run_dir: Path) -> Path:
    """The final weights of a run, else those of its newest complete checkpoint."""
    final = run_dir / "model.safetensors"
    if final.is_file():
        return final
    last = run_dir / "checkpoints" / "last_checkpoint"
    if last.is_file():
        path = run_dir / "checkpoints" / last.read_text().strip() / "model.safetensors"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{run_dir}: no model.safetensors and no complete checkpoint")


def pack_run(
    run_dir: str | Path,
    *,
    name: str = "mobile_parsing_rcnn_b_toy",
    dest_dir: str | Path = HERE,
    eval_json: str | Path | None = None,
    reported_on: str | None = None,
) -> dict[str, Any]:
    """Write ``dest_dir/<name>.safetensors`` from the run and update ``dest_dir/<name>.json``.

    The weights are loaded into the run's detector first (strict), so a file that does not
    fit its spec is refused. Returns the updated card as a dict.
    """
    from fnl_detector.build import build_detector
    from fnl_detector.spec import load_spec
    from fnl_detector.weights import read_weights, save_weights

    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    spec_path = run_dir / "spec.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no spec.json (not a fnl train run folder?)")
    spec = load_spec(spec_path)
    weights = run_weights(run_dir)
    state = read_weights(weights)
    build_detector(spec).load_state_dict(state, strict=True)
    out = dest_dir / f"{name}.safetensors"
    save_weights(
        state,
        out,
        {"spec": json.dumps(spec.to_dict(), sort_keys=True), "source": f"fnl train run {weights}"},
    )
    card_path = dest_dir / f"{name}.json"
    data = json.loads(card_path.read_text()) if card_path.is_file() else {"name": name}
    data.update(weights=out.name, sha256=file_sha256(out), size_bytes=out.stat().st_size)
    if eval_json is not None:
        scores = json.loads(Path(eval_json).read_text())
        data["reported"] = {m: round(scores[m]["AP"], 1) for m in METRICS if m in scores}
    if reported_on is not None:
        data["reported_on"] = reported_on
    ModelCard.validated({"package": "fnl_detector.model_zoo", **data}, str(card_path))
    card_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fnl_detector.model_zoo.pack", description=__doc__
    )
    parser.add_argument("run_dir", help="a fnl train run folder (spec.json + weights)")
    parser.add_argument("--name", default="mobile_parsing_rcnn_b_toy", help="model name")
    parser.add_argument("--dest", default=str(HERE), help="folder of the card (default: here)")
    parser.add_argument("--eval-json", help="output of fnl eval --json: the reported accuracy")
    parser.add_argument("--reported-on", help="what the accuracy was measured on")
    args = parser.parse_args(argv)
    card = pack_run(
        args.run_dir,
        name=args.name,
        dest_dir=args.dest,
        eval_json=args.eval_json,
        reported_on=args.reported_on,
    )
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
