"""`sipec analyze`: videos in, behaviour data out, one folder per video.

For each video, in `<out>/<video stem>/`:
results.parquet / results.csv (one row per animal per frame), pose_dlc.h5 / pose_dlc.csv / pose.slp /
pose.nwb (when PoseNet ran), annotated.mp4, ethogram.png and bouts.csv (when BehaveNet ran), density_*.png,
and summary.json (written last). A video that fails (does not open, is corrupt) is reported by name and
the others still run; results decoded before a corruption are kept. `--resume` continues each video after
its last checkpointed frame, after checking that the checkpoint belongs to the same video file and the same
model versions; a video already finished (its summary.json written for the same file) is not analysed or
rendered again.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import PipelineConfig
from orchestrator.modules import Connector
from orchestrator.pipeline import FrameState, ModuleSet, VideoPipeline
from orchestrator.results import PROGRESS, ResumeMismatch
from orchestrator.sinks import ResultsSink, render_annotated_video, write_pose_files
from sipec.data.atomic import write_text_atomic
from sipec.serving.sites import NoSiteLeft
from sipec.video import FrameReader, VideoError, probe, video_fingerprint

log = logging.getLogger("sipec.analyze")


@dataclass
class VideoOutcome:
    video: Path
    folder: Path
    ok: bool
    frames: int = 0
    seconds: float = 0.0
    error: str = ""
    files: list[str] = field(default_factory=list)
    retries: int = 0   # times the video was taken up again after a module was unavailable
    bad_input: bool = False   # the video does not open or decode, or --resume found another video's checkpoint
    already_finished: bool = False   # --resume found it finished: nothing analysed or written again

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _names(modules: ModuleSet, name: str, field_: str) -> list[str]:
    return list(getattr(modules.info[name], field_)) if name in modules else []


FOLDER_NAMES = ("stem", "file")


def output_names(videos: list[Path], by: str = "stem") -> dict[Path, str]:
    """The result folder name of each video: its file stem (``by="file"``: its whole file name, suffix included,
    which never collides between the videos of one folder, whoever analyses them) made a safe single path
    component (no separators, no leading dot, so never `.` or `..`), with `-2`, `-3`, ... for names that repeat
    among ``videos``, in the order given."""
    names: dict[Path, str] = {}
    used: set[str] = set()
    for video in videos:
        base = re.sub(r"[^A-Za-z0-9_.+-]", "_", video.name if by == "file" else video.stem).lstrip(".") or "video"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        names[video] = name
    return names


def analyze_video(video: Path, out: Path, modules: ModuleSet, config: PipelineConfig, resume: bool = False,
                  progress: Callable[[int, int], None] | None = None, name: str | None = None,
                  sites: list[dict[str, Any]] | None = None) -> VideoOutcome:
    """One video into `out`/`name`. `sites` (modules from an endpoints file): the list of which site served each
    module from which frame, this attempt appended to it, written to summary.json."""
    folder = out / (name or output_names([video])[video])
    outcome = VideoOutcome(video, folder, ok=False)
    t0 = time.time()
    try:
        info = probe(video)
        source = video_fingerprint(video)
    except (VideoError, OSError) as exc:
        outcome.error, outcome.bad_input = str(exc), True
        return outcome
    versions = {m: int(i.version) for m, i in modules.info.items()}
    if resume and _finished_before(folder, source, versions, outcome):
        return outcome
    folder.mkdir(parents=True, exist_ok=True)
    if not resume:   # a summary left by an earlier analysis of this folder would describe other results
        (folder / "summary.json").unlink(missing_ok=True)
    keypoints = _names(modules, "posenet", "keypoint_names")
    behaviours = _names(modules, "behavenet", "class_names")
    try:
        sink = ResultsSink(folder, str(video), keypoints, behaviours, resume=resume,
                           chunk_frames=config.chunk_frames,
                           meta={"video": str(video), "source": source, "model_versions": versions})
    except ResumeMismatch as exc:
        outcome.error, outcome.bad_input = str(exc), True
        return outcome
    start = sink.writer.next_frame
    if sites is not None and modules.served_by:
        sites.append({"from_frame": start, "modules": dict(modules.served_by)})
    decode_error: VideoError | None = None
    if not sink.writer.finished:
        pipeline = VideoPipeline(modules, config.pipeline_options())
        # a resume analyses the last frames before `start` again without writing them (IdNet's and BehaveNet's
        # windows and the identity smoothing reach back), and replays the written frames before those to the tracker
        first = max(0, start - pipeline.warmup_frames())
        with FrameReader(video, start=first) as reader:
            def emit(state: FrameState) -> None:
                if state.frame.index >= start:
                    sink.add(state)

            replay = _tracker_replay(sink.writer.table(), before=first) if first > 0 and "tracker" in modules \
                else None
            try:
                pipeline.run(reader, emit, progress=(lambda i: progress(i, info.frames)) if progress else None,
                             replay=replay)
            except BaseException:
                sink.writer.flush()   # the frames completed so far are kept: a retry or --resume continues after them
                raise
            decode_error = reader.error
            decode_fps = reader.decode_fps
        sink.writer.finish()
    else:
        decode_fps = 0.0
    outcome.frames = sink.writer.last_completed + 1   # every frame completed, with or without animals
    # the whole table is read back only for the outputs that draw on all of it; the results files and the
    # summary need one part at a time and three columns
    outputs = config.outputs
    wants_table = (bool(keypoints) and outputs.get("pose", True)) or outputs.get("annotated_video", True) \
        or (bool(behaviours) and outputs.get("ethogram", True)) or outputs.get("density", True)
    table = sink.writer.table() if wants_table else None
    brief = sink.writer.table(columns=[c for c in ("frame", "track_id", "identity", "behaviour")
                                       if c in sink.writer.schema.names])
    files = ["results.parquet", "results.csv"]
    if keypoints and config.outputs.get("pose", True):
        files += [p.name for p in write_pose_files(table, keypoints, folder, str(video.resolve()),
                                                                 fps=info.fps, video_shape=(info.height, info.width))]
    if config.outputs.get("annotated_video", True):
        render_annotated_video(video, table, folder / "annotated.mp4", keypoints, behaviours, info.fps,
                               frames=outcome.frames)
        files.append("annotated.mp4")
    if table is not None:
        files += _reports(table, folder, behaviours, info, config)
    outcome.seconds = time.time() - t0
    outcome.files = files
    outcome.ok = decode_error is None
    outcome.error = str(decode_error) if decode_error else ""
    outcome.bad_input = decode_error is not None
    summary = {
        "video": str(video), "source": source, "frames_analysed": outcome.frames, "frames_in_header": info.frames,
        "fps": info.fps,
        "size": [info.width, info.height], "modules": list(modules.stubs), "model_versions": versions,
        "resumed_from_frame": start if resume else 0, "rows": brief.num_rows,
        "seconds": round(outcome.seconds, 2), "decode_fps": round(decode_fps, 1), "files": files,
        "error": outcome.error or None, "identities": _counts(brief, "identity"),
        "tracks": int(len(set(brief.column("track_id").to_pylist()) - {0})) if brief.num_rows else 0,
        **track_summary(brief, int(config.tracker.get("animals") or 0)),
        **({"untracked_instances": _untracked(brief)} if "tracker" in modules.stubs else {}),
        "determined_by": determined_by(modules, config),
        **({"sites": sites} if sites else {}),
    }
    if behaviours:
        summary["behaviour_frames"] = _counts(brief, "behaviour")
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=2))
    outcome.files.append("summary.json")
    return outcome


def _finished_before(folder: Path, source: dict[str, Any], versions: dict[str, int], outcome: VideoOutcome
                     ) -> bool:
    """Whether ``folder`` holds this video's finished analysis (progress.json finished and summary.json, written
    last, for the same file and model versions); if so ``outcome`` is filled from it and nothing needs doing."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        finished = json.loads((folder / PROGRESS).read_text()).get("finished")
    except (OSError, ValueError):
        return False
    if not finished or summary.get("source") != source or summary.get("model_versions") != versions:
        return False
    outcome.frames = int(summary.get("frames_analysed", 0))
    outcome.files = list(summary.get("files", [])) + ["summary.json"]
    outcome.error = summary.get("error") or ""
    outcome.ok = not outcome.error
    outcome.bad_input = bool(outcome.error)
    outcome.already_finished = True
    return True


def _untracked(table: Any) -> int:
    """Rows the tracker left without a track: beyond a known number of animals, or scored below the new-track score
    (detections that do not score like the tracked animals)."""
    return int(sum(1 for t in table.column("track_id").to_pylist() if not t)) if table.num_rows else 0


def track_summary(table: Any, animals: int) -> dict[str, Any]:
    """How whole the tracks are: the median track length in frames, how often a track was taken up again after
    being lost (gaps bridged), and with a known number of animals the frames in which all of them are tracked."""
    out: dict[str, Any] = {"median_track_frames": 0, "track_gaps_bridged": 0}
    if table.num_rows:
        df = table.select(["frame", "track_id"]).to_pandas()
        df = df[df["track_id"] > 0]
        if len(df):
            seen = df.drop_duplicates().sort_values(["track_id", "frame"])
            out["median_track_frames"] = float(seen.groupby("track_id").size().median())
            out["track_gaps_bridged"] = int((seen.groupby("track_id")["frame"].diff() > 1).sum())
        if animals:
            per_frame = df.groupby("frame")["track_id"].nunique()
            out["frames_with_all_animals"] = int((per_frame >= animals).sum())
    if animals:
        out.setdefault("frames_with_all_animals", 0)
        out["animals"] = animals
    return out


RESULT_PACKAGES = ("sipec", "tensorflow", "keras", "numpy", "opencv-python-headless", "scipy")


def determined_by(modules: ModuleSet, config: PipelineConfig) -> dict[str, Any]:
    """What an analysis's results depend on besides the video: per module the model, its version, the backend
    and the batch size every model call is padded to (ModelInfo; 0 = not padded), the pipeline options, and the
    software. Two runs that agree on all of it give byte-identical results tables on one machine (README, "Same
    input, same output")."""
    import dataclasses
    import importlib.metadata
    import platform

    packages = {}
    for name in RESULT_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    options = dataclasses.asdict(config.pipeline_options())
    options.pop("timeout_s", None)          # how long to wait, not what is computed
    options.pop("max_frames_in_flight", None)
    return {
        "modules": {name: {"model": info.model_name, "version": int(info.version), "backend": info.backend,
                           "batch_size": int(info.batch_size)} for name, info in modules.info.items()},
        "pipeline": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "packages": packages, "python": platform.python_version(), "machine": platform.machine(),
    }


def _tracker_replay(table: Any, before: int) -> list[tuple[int, list[Any]]]:
    """The frames already written before frame `before`, as tracker requests with their track ids (to resume
    tracking exactly)."""
    import pyarrow.compute as pc

    from sipec.v1 import common_pb2

    # instances without a track (beyond a known number of animals) never changed the tracker's state
    table = table.filter(pc.and_(pc.less(table.column("frame"), before), pc.greater(table.column("track_id"), 0)))
    by_frame: dict[int, list[Any]] = {}
    for r in table.select(["frame", "track_id", "score", "x1", "y1", "x2", "y2", "com_x", "com_y", "mask_height",
                           "mask_width", "mask_rle"]).to_pylist():
        inst = common_pb2.Instance(index=len(by_frame.get(r["frame"], [])), score=r["score"] or 0.0,
                                   track_id=r["track_id"] or 0,
                                   box=common_pb2.Box(x1=r["x1"], y1=r["y1"], x2=r["x2"], y2=r["y2"]),
                                   com=common_pb2.Point(x=r["com_x"], y=r["com_y"]))
        if r["mask_rle"]:
            inst.mask.CopyFrom(common_pb2.Mask(height=r["mask_height"], width=r["mask_width"],
                                               counts=r["mask_rle"].encode("ascii"), box=inst.box))
        by_frame.setdefault(int(r["frame"]), []).append(inst)
    return sorted(by_frame.items())


def _counts(table: Any, column: str) -> dict[str, int]:
    if column not in table.column_names or not table.num_rows:
        return {}
    values, counts = np.unique(np.array([v for v in table.column(column).to_pylist() if v is not None], dtype=object)
                               .astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}


def identity_or_track(df: Any) -> Any:
    """Who each row is, for per-individual reports: its identity; a row IdNet left unnamed (e.g. before its track's
    first answer) takes its track's identity in the nearest earlier, else later, frame where that identity is not
    already someone else's in its own frame; otherwise, and for tracks never named, "track_<id>"."""
    import pandas as pd

    fallback = "track_" + df["track_id"].astype(str)
    if not df["identity"].notna().any():
        return fallback
    ordered = df.sort_values(["track_id", "frame"], kind="stable")
    filled = ordered.groupby("track_id")["identity"].transform(lambda v: v.ffill().bfill())
    who = df["identity"].copy()
    guess = filled.reindex(df.index)
    unnamed = who.isna() & guess.notna()
    taken = set(zip(df.loc[who.notna(), "frame"], who[who.notna()], strict=True))
    for i in df.index[unnamed]:
        key = (df.at[i, "frame"], guess.at[i])
        if key not in taken:
            who.at[i] = guess.at[i]
            taken.add(key)
    return pd.Series(np.where(who.notna(), who, fallback), index=df.index)


def _reports(table: Any, folder: Path, behaviours: list[str], info: Any, config: PipelineConfig) -> list[str]:
    """Ethogram and bout statistics per individual; position density maps per individual."""
    files: list[str] = []
    if not table.num_rows:
        return files
    df = table.to_pandas()
    if df["track_id"].gt(0).any():   # per individual: instances without a track (beyond `animals`) are no one's
        df = df[df["track_id"] > 0]
    df = df.assign(who=identity_or_track(df))
    if behaviours and config.outputs.get("ethogram", True):
        from sipec.reports.ethogram import bout_statistics, plot_ethogram, write_bout_statistics_csv

        n_frames = int(df["frame"].max()) + 1
        labels: dict[str, np.ndarray] = {}
        for name, g in df.groupby("who"):
            seq = np.full(n_frames, -1, dtype=int)  # -1: animal not seen in that frame
            # a social behaviour from the pair channel (this animal with a partner) wins over the individual one
            best = g["social_behaviour"].where(g["social_behaviour"].notna(), g["behaviour"])
            idx = best.map({b: i for i, b in enumerate(behaviours)}).fillna(-1).astype(int).to_numpy()
            seq[g["frame"].to_numpy()] = idx
            labels[str(name)] = seq
        write_bout_statistics_csv(folder / "bouts.csv", bout_statistics(labels, behaviours, info.fps))
        plot_ethogram(labels, behaviours, info.fps, folder / "ethogram.png")
        files += ["bouts.csv", "ethogram.png"]
    if config.outputs.get("density", True):
        from sipec.reports.density import density_maps

        points = {str(name): g[["com_x", "com_y"]].to_numpy(dtype=float) for name, g in df.groupby("who")}
        maps = density_maps(points, (info.width, info.height), folder)
        files += [path.name for _, path in maps.values() if path is not None]
    return files


def analyze(videos: list[Path], out: Path, connector: Connector, config: PipelineConfig, resume: bool = False,
            progress_factory: Callable[[Path, int], Any] | None = None, folder_names: str = "stem"
            ) -> list[VideoOutcome]:
    """Every video in turn; one failing never stops the others. A module found unavailable mid-video moves to
    the next site that has it (several sites in the endpoints file) and the video continues from its last
    completed frame at once; with no other site, the same services are retried with backoff (`config.retries`)."""
    outcomes = []
    names = output_names(videos, folder_names)
    for video in videos:
        bar = progress_factory(video, 0) if progress_factory else None
        attempt = 0
        sites: list[dict[str, Any]] = []
        modules: ModuleSet | None = None
        began = False   # this run has started the video's folder: a retry continues it, an earlier run's is not used
        while True:
            try:
                modules = connector.for_video(names[video])
                again, began = resume or began, True
                outcome = analyze_video(video, out, modules, config, again,
                                        progress=(lambda i, n, bar=bar: bar(i, n)) if bar else None,
                                        name=names[video], sites=sites)
                outcome.retries = attempt
                break
            except Exception as exc:  # noqa: BLE001 - reported per video; the call goes on with the next one
                moved = _moved(connector, modules) if modules is not None and unavailable(exc) else []
                if moved:
                    log.warning("a site stopped answering; the video continues at the next site from its last "
                                "completed frame", extra={"video": str(video), "down": [f"{m}@{s}" for s, m in moved],
                                                          "error": str(exc)})
                    modules = None
                    continue
                no_site_left = isinstance(exc, NoSiteLeft)
                if (unavailable(exc) or no_site_left) and attempt < config.retries:
                    if no_site_left:   # every site of a module is down: try them all again after the backoff
                        connector.revive()
                    delay = config.retry_backoff_s * 2 ** attempt
                    attempt += 1
                    log.warning("a module is unavailable; retrying the video from its last completed frame",
                                extra={"video": str(video), "attempt": attempt, "of": config.retries,
                                       "delay_s": delay, "error": str(exc)})
                    time.sleep(delay)
                    continue
                log.exception("analysis failed", extra={"video": str(video)})
                outcome = VideoOutcome(video, out / names[video], ok=False, error=f"{video}: {exc}", retries=attempt)
                break
        outcomes.append(outcome)
    return outcomes


def _moved(connector: Connector, modules: ModuleSet) -> list[tuple[str, str]]:
    """The (site, module) pairs marked down after a failure; none when asking the sites fails itself."""
    try:
        return connector.failed(modules)
    except Exception as exc:  # noqa: BLE001 - the video's own error is what gets reported
        log.warning("could not ask the sites for their health", extra={"error": str(exc)})
        return []


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or the gRPC error a stream failed with) says a module is unavailable: worth a retry."""
    import grpc

    seen = 0
    while exc is not None and seen < 5:
        code = exc.code() if hasattr(exc, "code") and callable(exc.code) else None
        if code == grpc.StatusCode.UNAVAILABLE:
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return False
