"""`amid-predict` (also `amid-evaluate predict`): a trained student applied to new data.

    amid-predict runs/amid --media new_clips/ -o preds.csv        # media -> predictions
    amid-predict runs/amid --cache visual=cache/new/visual__pixels.h5 -o preds.csv

`--media` takes a folder of clips or a manifest CSV (labels optional) and
extracts the student's modalities the way its training caches were made;
`--cache` takes caches made already, which must match the training caches'
extractor identity. Same conventions as the other commands (amid/cli.py).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import typer

from amid.cli import errors, quiet_option, setup_logging
from amid.errors import AmidError

# The commands import their work inside the function: `--help` (and `amid-evaluate`,
# which registers these commands) loads no torch.
PROG = "amid-predict"
HELP = ("Predicted class, probabilities and embeddings from the student's target modality "
        "alone: from a folder or CSV of new media (--media), or from feature caches "
        "(--cache; default: the caches the run was trained on).")
log = logging.getLogger(__name__)

_RUN = typer.Argument(..., help="Run folder written by amid-train.")
_CACHE = typer.Option([], "--cache", "-c", help="MODALITY=PATH of a feature cache (repeat per "
                      "target modality; default: the caches the run was trained on). A cache "
                      "made with other extractor settings than the training caches' is "
                      "refused.")
_MEDIA = typer.Option(None, "--media", "-m", help="A folder of new media (video, audio, .txt "
                      "transcripts; one sample per file stem) or a manifest CSV (sample_id, "
                      "video_path / audio_path / text; label, split, fold optional): extracted "
                      "with the run's recorded extractor settings, then predicted.")
_ROOT = typer.Option(None, "--root", help="With a --media CSV: the folder its media paths are "
                     "relative to (default: the CSV's folder).")
_CACHE_DIR = typer.Option(None, "--cache-dir", help="With --media: keep the extracted caches "
                          "here (a rerun reuses them); default: a scratch folder, removed "
                          "afterwards.")
_OUT = typer.Option(Path("predictions.csv"), "--out", "-o", help="CSV to write: sample_id, "
                    "predicted, label (when known), prob_<class> per class.")
_H5 = typer.Option(None, "--h5", help="HDF5 of ids, predicted, embeddings, probabilities, "
                   "logits (default: the CSV path with .h5).")
_BATCH = typer.Option(256, "--batch-size", min=1, help="Samples per forward pass.")
_DEVICE = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto (also runs the "
                       "extractor with --media).")


def run_predict(prog: str, run_dir: Path, cache: list[str], media: Path | None,
                root: Path | None, cache_dir: Path | None, out: Path, h5: Path | None,
                batch_size: int, device: str, quiet: bool) -> None:
    from amid.evaluate import predict as P

    setup_logging(quiet)
    with errors(prog):
        if media is not None and cache:
            raise AmidError("give --media or --cache, not both")
        if media is None and (root is not None or cache_dir is not None):
            raise AmidError("--root and --cache-dir apply to --media only")
        if out.is_dir():
            raise AmidError(f"--out {out} is a folder; give the CSV file to write")
        student = P.load(run_dir, device)
        labels = None
        if media is None:
            result, classes = P.predict(student, P.parse_cache_args(cache), batch_size)
        else:
            result, classes, labels = _from_media(student, media, root, cache_dir, batch_size,
                                                  device, quiet)
        written = P.write_predictions(result, classes, out, h5, labels)
    if not quiet:
        typer.echo(f"{len(result['ids'])} prediction(s) -> {', '.join(map(str, written))}")


def _from_media(student, media: Path, root: Path | None, cache_dir: Path | None,
                batch_size: int, device: str, quiet: bool):
    from amid.evaluate import newmedia
    from amid.evaluate.predict import predict

    manifest = newmedia.manifest_for(media, student.target, root)
    progress = not quiet and sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="amid-predict-") as scratch:
        folder = cache_dir if cache_dir is not None else Path(scratch)
        caches, failed = newmedia.extract_caches(student, manifest, folder, device, progress)
        warning = newmedia.describe_failures(failed, len(manifest))
        if warning:
            log.warning("%s", warning)
        result, classes = predict(student, caches, batch_size)
    return result, classes, newmedia.known_labels(manifest)


def evaluate_predict(
    run_dir: Path = _RUN, cache: list[str] = _CACHE, media: Path | None = _MEDIA,
    root: Path | None = _ROOT, cache_dir: Path | None = _CACHE_DIR, out: Path = _OUT,
    h5: Path | None = _H5, batch_size: int = _BATCH, device: str = _DEVICE,
    quiet: bool = quiet_option(),
) -> None:
    run_predict("amid-evaluate", run_dir, cache, media, root, cache_dir, out, h5, batch_size,
                device, quiet)


predict_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=HELP)


@predict_app.command(help=HELP)
def predict_command(
    run_dir: Path = _RUN, cache: list[str] = _CACHE, media: Path | None = _MEDIA,
    root: Path | None = _ROOT, cache_dir: Path | None = _CACHE_DIR, out: Path = _OUT,
    h5: Path | None = _H5, batch_size: int = _BATCH, device: str = _DEVICE,
    quiet: bool = quiet_option(),
) -> None:
    run_predict(PROG, run_dir, cache, media, root, cache_dir, out, h5, batch_size, device,
                quiet)


def main() -> None:
    predict_app(prog_name=PROG)
