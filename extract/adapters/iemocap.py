"""`iemocap`: IEMOCAP utterances, 4 emotions, fold = session (docs/data.md).

Layout (the release, `IEMOCAP_full_release/`):
`Session{1..5}/dialog/EmoEvaluation/<dialog>.txt` (one line per utterance:
`[start - end]<TAB><utterance><TAB><code><TAB>[V, A, D]`),
`Session{n}/dialog/transcriptions/<dialog>.txt` (`<utterance> [start-end]: text`),
`Session{n}/sentences/wav/<dialog>/<utterance>.wav` and
`Session{n}/dialog/avi/DivX/<dialog>.avi`.

Classes: neutral (neu), happy (hap, and exc merged into it, the usual 4-class
setup: 5,531 utterances), angry (ang), sad (sad); every other code (fru, sur,
fea, dis, oth, xxx) is left out. `fold` is the session number, so the 5-fold
leave-one-session-out protocol is `dataset.fold: 1..5`.

Audio is the utterance's own wav (`audio_path`); the video is the dialog's
recording (`video_path`) with the utterance's `start`/`end` from
EmoEvaluation: those times locate the utterance inside the dialog video. The
utterance wav is the utterance already, so its row says so with
`audio_start: 0` (and no `audio_end`): the whole file. Dialog videos or
utterance wavs that are absent are left empty in the row (logged), so an
audio-only copy of IEMOCAP still works.

Transcripts and evaluations are read as UTF-8, or as Latin-1 with a warning
naming the file (`adapters.text`): never with replacement characters.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from amid.errors import ManifestError
from amid.extract.adapters.registry import AdapterOptions, adapter
from amid.extract.adapters.text import read_text

log = logging.getLogger(__name__)

LABELS = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
_EVAL_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\]\s+(\S+)\s+(\S+)")
_TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[[^\]]*\]:\s*(.*)$")


def parse_evaluation(path: Path) -> list[tuple[str, float, float, str]]:
    """(utterance, start, end, emotion code) for each utterance line of an EmoEvaluation file."""
    out = []
    lines = read_text(path).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.startswith("["):
            continue  # headers, annotator lines (C-E1:, A-E3:, ...)
        match = _EVAL_LINE.match(line)
        if not match:
            raise ManifestError(f"{path}:{number}: cannot parse utterance line {line!r}")
        start, end, utt, code = match.groups()
        out.append((utt, float(start), float(end), code))
    return out


def parse_transcription(path: Path) -> dict[str, str]:
    """utterance -> text (lines that are not utterances, e.g. noises, are skipped)."""
    if not path.exists():
        return {}
    texts = {}
    for line in read_text(path).splitlines():
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match:
            texts[match.group(1)] = match.group(2).strip()
    return texts


class Options(AdapterOptions):
    merge_excited: bool = True  # `exc` counted as happy (the usual 4-class setup)


@adapter("iemocap", Options)
def prepare_iemocap(root: Path, opts: Options) -> pd.DataFrame:
    """Manifest of the 4-class IEMOCAP utterances of `root`/Session1..5."""
    labels = dict(LABELS) if opts.merge_excited else {k: v for k, v in LABELS.items() if k != "exc"}
    sessions = [n for n in range(1, 6) if (root / f"Session{n}").is_dir()]
    if not sessions:
        raise ManifestError(f"iemocap: no Session1..Session5 folder under {root}")
    rows, no_wav, no_video = [], 0, 0
    for n in sessions:
        session = root / f"Session{n}"
        evaluations = sorted(p for p in (session / "dialog" / "EmoEvaluation").glob("*.txt")
                             if not p.name.startswith("._"))
        for evaluation in evaluations:
            dialog = evaluation.stem
            texts = parse_transcription(session / "dialog" / "transcriptions" / f"{dialog}.txt")
            video = session / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            for utt, start, end, code in parse_evaluation(evaluation):
                if code not in labels:
                    continue
                wav = session / "sentences" / "wav" / dialog / f"{utt}.wav"
                no_wav += not wav.exists()
                no_video += not video.exists()
                rows.append({
                    "sample_id": utt, "label": labels[code], "split": "", "fold": n,
                    "audio_path": wav.relative_to(root).as_posix() if wav.exists() else "",
                    "video_path": video.relative_to(root).as_posix() if video.exists() else "",
                    "start": start, "end": end, "text": texts.get(utt, ""),
                    # the wav is the utterance itself: start/end apply to the video only
                    "audio_start": 0.0 if wav.exists() else "",
                })
    if not rows:
        raise ManifestError(f"iemocap: no neutral/happy/angry/sad utterance found under {root}")
    if no_wav:
        log.warning("iemocap: %d utterance wav file(s) not found; rows keep no audio_path", no_wav)
    if no_video:
        log.warning("iemocap: %d utterance(s) have no dialog video (dialog/avi/DivX)", no_video)
    return pd.DataFrame(rows)
