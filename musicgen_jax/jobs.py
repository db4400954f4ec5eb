"""Inference jobs at scale: a JSONL job file -> one WAV per job and a manifest, on one process or many.

    musicgen-jax batch --model M --jobs jobs.jsonl --out DIR [--batch-size 4]

A job is one line: ``{"id": "a", "text": "lofi beat", "duration": 8, "seed": 1, "melody": "tune.wav", ...}``
(:data:`KEYS`). The runner

- **plans static shapes**: jobs are grouped by what the compiled programs depend on (:meth:`Runner.group`: the
  duration bucket, guidance on or off, sampling, top-k, top-p on or off; for long-form, melody or not) into batches of
  ``batch_size`` rows, padded with copies of a real row whose output is dropped; every prompt is padded to
  ``text_length`` tokens. A job file compiles a bounded set of programs, whatever its durations.
- **keeps each job's audio its own**: a row samples from its own key (``jax.random.PRNGKey(seed)``, taken as a
  batch of one: :func:`musicgen_jax.sampling.row_keys`) with its own knobs, and its delay pattern ends at its own
  length inside the bucket's buffer, so its codes are those of ``generate`` for that job alone (with the text
  padded to ``text_length``: MusicGen Melody attends to the padded prefix positions) whatever its neighbours.
- **is robust**: a bad line is an ``error`` entry in the manifest while every other job runs; WAVs and manifests
  are written atomically; a rerun skips finished jobs (an ``ok`` entry whose WAV is there), rewrites nothing of
  theirs, and retries the rest, so a killed run resumes where it stopped.
- **runs processes independently**: process ``i`` of ``n`` takes the jobs whose id hashes to ``i``
  (:func:`owner`) and writes its own manifest; nothing in the loop talks to another process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np

from musicgen_jax import generation, long_form
from musicgen_jax.errors import one_line

KEYS = ("id", "text", "duration", "seed", "melody", "guidance_scale", "top_k", "top_p", "temperature", "do_sample")
REQUIRED = ("id", "text", "duration")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
DEFAULT_BUCKETS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # seconds: one program set per bucket used
DEFAULT_TEXT_LENGTH = 64  # tokens every prompt is padded to (T5 tokens of MusicGen prompts are rarely past 40)
DEFAULT_BATCH_SIZE = 4


class JobError(ValueError):
    """A job that cannot run: its manifest entry's error text."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One line of a job file, validated. Knobs left None take the model's generation config."""

    id: str
    line: int
    text: str
    duration: float
    seed: int
    melody: str | None = None  # an absolute path
    guidance_scale: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    do_sample: bool | None = None


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A line that is not a job: its manifest entry is an error."""

    line: int
    id: str | None
    error: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """The runner settings a job's audio depends on (with the job's line and the model)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    text_length: int = DEFAULT_TEXT_LENGTH
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    window_duration: float | None = None  # long-form: default 30 s
    extend_stride: float | None = None  # long-form: default 18 s (0.6 of another window)


def default_seed(job_id: str) -> int:
    """The seed of a job that gives none: from its id (32 bits of its SHA-256), so jobs differ and reruns agree."""
    return int.from_bytes(hashlib.sha256(b"musicgen-jax seed " + job_id.encode()).digest()[:4], "big")


def owner(key: str, num_processes: int) -> int:
    """The process (of ``num_processes``) that runs the job with id ``key``: a hash, the same on every host."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % num_processes


def entry_key(item: Job | BadLine) -> str:
    """What identifies a manifest entry: the job id, or the line for a line without one."""
    return item.id if item.id is not None else f"line {item.line}"


# ---------------------------------------------------------------------------------------------------------------
# Reading a job file.


def read_jobs(path: str) -> list[Job | BadLine]:
    """Every non-blank line of the job file ``path``, as a :class:`Job` or a :class:`BadLine` (in file order).
    A file that cannot be read raises :class:`JobError` (the whole run stops); a bad line never does."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise JobError(f"--jobs {path}: cannot read ({e.strerror or type(e).__name__})") from None
    folder = os.path.dirname(os.path.abspath(path))
    items: list[Job | BadLine] = []
    first_line: dict[str, int] = {}
    for number, data in enumerate(raw.split(b"\n"), start=1):
        if not data.strip():
            continue
        item = parse_line(data, number, folder)
        if isinstance(item, Job):
            if item.id in first_line:
                item = BadLine(number, None, f"duplicate id {item.id!r} (first on line {first_line[item.id]})")
            else:
                first_line[item.id] = number
        items.append(item)
    return items


def parse_line(data: bytes, number: int, folder: str) -> Job | BadLine:
    """One line (bytes) -> a :class:`Job`, or a :class:`BadLine` saying what is wrong with it."""
    job_id = None
    try:
        try:
            obj = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise JobError("not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise JobError(f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise JobError(f"a job must be a JSON object, got {type(obj).__name__}")
        if isinstance(obj.get("id"), str) and ID_PATTERN.fullmatch(obj["id"]):
            job_id = obj["id"]
        return _job(obj, number, folder)
    except JobError as e:
        return BadLine(number, job_id, str(e))


def _job(obj: dict, number: int, folder: str) -> Job:
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise JobError(f"unknown key(s) {', '.join(map(repr, unknown))}; a job takes {', '.join(KEYS)}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise JobError(f"missing key(s) {', '.join(map(repr, missing))}")
    job_id = obj["id"]
    if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
        raise JobError(
            f"id {job_id!r} must be a string of letters, digits, '.', '_' or '-' (starting with a letter or digit, "
            "at most 200): it names the WAV file"
        )
    text = obj["text"]
    if not isinstance(text, str) or not text.strip():
        raise JobError(f"text must be a non-empty string, got {text!r}")
    try:
        duration = generation.check_duration(obj["duration"])
        if duration > long_form.MAX_DURATION_SECONDS:
            raise ValueError(f"duration {duration:g} s is past the cap of {long_form.MAX_DURATION_SECONDS:g} s")
        seed = generation.check_seed(obj.get("seed"))
        knobs = {k: obj[k] for k in ("guidance_scale", "top_k", "top_p", "temperature") if obj.get(k) is not None}
        do_sample = obj.get("do_sample")
        if do_sample is not None and not isinstance(do_sample, bool):
            raise ValueError(f"do_sample must be true or false, got {do_sample!r}")
        generation.check_sampling(
            True if do_sample is None else do_sample,
            *(knobs.get(k) for k in ("top_k", "top_p", "temperature")),
            knobs.get("guidance_scale"),
        )
    except ValueError as e:
        raise JobError(str(e)) from None
    melody = obj.get("melody")
    if melody is not None:
        if not isinstance(melody, str) or not melody:
            raise JobError(f"melody must be a path (relative to the job file's folder), got {melody!r}")
        melody = os.path.normpath(os.path.join(folder, melody))
        if not os.path.isfile(melody):
            raise JobError(f"melody file {melody} does not exist")
    return Job(
        job_id,
        number,
        text,
        duration,
        default_seed(job_id) if seed is None else seed,
        melody,
        knobs.get("guidance_scale"),
        knobs.get("top_k"),
        knobs.get("top_p"),
        knobs.get("temperature"),
        do_sample,
    )


# ---------------------------------------------------------------------------------------------------------------
# The manifest.


def manifest_name(process_id: int, num_processes: int) -> str:
    return "manifest.jsonl" if num_processes == 1 else f"manifest-{process_id:05d}-of-{num_processes:05d}.jsonl"


def read_manifest(path: str) -> dict[str, dict]:
    """A manifest's entries by :func:`entry_key` (later lines win); a file that is not one raises :class:`JobError`."""
    entries: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
                key = entry["id"] if entry.get("id") is not None else f"line {entry['line']}"
                entry["status"]  # noqa: B018 - every entry has one
            except (json.JSONDecodeError, KeyError, TypeError):
                raise JobError(f"{path} line {number}: not a musicgen-jax manifest entry") from None
            entries[key] = entry
    return entries


class Manifest:
    """This process's manifest, ``DIR/manifest.jsonl`` (or ``manifest-<i>-of-<n>.jsonl``): rewritten atomically
    (temporary + rename) whenever entries change, so a kill leaves the old or the new, never neither."""

    def __init__(self, out_dir: str, process_id: int = 0, num_processes: int = 1):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, manifest_name(process_id, num_processes))
        self.entries = read_manifest(self.path) if os.path.exists(self.path) else {}

    @staticmethod
    def finished(out_dir: str) -> dict[str, dict]:
        """The ``ok`` entries of every manifest in ``out_dir`` whose WAV is still there, by job id."""
        from musicgen_jax import audio

        done = {}
        for name in sorted(os.listdir(out_dir)):
            if name.startswith("manifest") and name.endswith(".jsonl"):
                for key, entry in read_manifest(os.path.join(out_dir, name)).items():
                    path = os.path.join(out_dir, f"{key}.wav")
                    if entry["status"] == "ok" and os.path.isfile(path) and audio.written_by_musicgen_jax(path):
                        done[key] = entry
        return done

    def record(self, entries: Iterable[dict]) -> None:
        from musicgen_jax.files import atomic_write

        changed = False
        for entry in entries:
            key = entry["id"] if entry.get("id") is not None else f"line {entry['line']}"
            if self.entries.get(key) != entry:
                self.entries[key] = entry
                changed = True
        if changed:
            with atomic_write(self.path, "w", encoding="utf-8") as f:
                for entry in self.entries.values():
                    f.write(json.dumps(entry, sort_keys=True) + "\n")


def error_entry(item: Job | BadLine, message: str) -> dict:
    return {"id": item.id, "line": item.line, "status": "error", "error": message, "seconds": 0.0, "audio_seconds": 0}


# ---------------------------------------------------------------------------------------------------------------
# Running batches.


@dataclasses.dataclass(frozen=True)
class Group:
    """What a batch's compiled programs depend on: its rows share it."""

    long_form: bool
    frames: int  # the bucket's frames (one window), or the piece's frames (long-form: programs are the window's)
    # long-form only: one window's rows with and without a melody share a batch (HF's null chroma, tiled to the
    # chroma length, gives the text-only rows a prefix of the same shape)
    melody: bool
    use_cfg: bool
    do_sample: bool
    top_k: int
    use_top_p: bool


class Runner:
    """Runs batches of jobs on one model (its own devices: no collective with other processes)."""

    def __init__(self, model, tokenizer, settings: Settings):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        cfg = model.config
        self.frame_rate, self.sampling_rate = cfg.audio_encoder.frame_rate, model.sampling_rate
        dec = cfg.decoder
        self.channel_codebooks = dec.num_codebooks // dec.audio_channels
        self.melody_family = not dec.cross_attention
        window = long_form.DEFAULT_WINDOW_SECONDS if settings.window_duration is None else settings.window_duration
        self.window_seconds = window
        self.window_frames = long_form.frames_of(window, self.frame_rate)
        prefix = cfg.chroma_length + settings.text_length if self.melody_family else 0
        message = long_form.window_error(
            cfg, prefix, self.window_frames, window, default=settings.window_duration is None
        )
        if message:
            raise JobError(f"{message} (with --text-length {settings.text_length})")
        if settings.extend_stride is not None:
            long_form.check_stride(settings.extend_stride, window)
        for bucket in settings.buckets:
            if long_form.frames_of(bucket, self.frame_rate) > self.window_frames:
                raise JobError(f"--buckets: {bucket:g} s is longer than the window ({window:g} s)")
        self.buckets = sorted(
            {generation.frames_for(b, self.frame_rate) for b in settings.buckets} | {self.window_frames}
        )

    def check(self, job: Job) -> None:
        """What the job file alone cannot say: a melody on a plain checkpoint, a prompt past ``text_length``."""
        if job.melody is not None and not self.melody_family:
            raise JobError("melody needs a MusicGen Melody checkpoint; this one is plain MusicGen (text only)")
        tokens = len(self.tokenizer(job.text)["input_ids"])
        if tokens > self.settings.text_length:
            raise JobError(
                f"prompt too long: {tokens} tokens, more than the runner's --text-length {self.settings.text_length}"
            )
        self.knobs(job)

    def knobs(self, job: Job) -> generation.Knobs:
        dec = self.model.config.decoder
        return generation.resolve_knobs(
            self.model.generation_config,
            dec,
            do_sample=job.do_sample,
            guidance_scale=job.guidance_scale,
            top_k=job.top_k,
            top_p=job.top_p,
            temperature=job.temperature,
        )

    def frames(self, job: Job) -> int:
        return generation.frames_for(job.duration, self.frame_rate)

    def group(self, job: Job) -> Group:
        knobs = self.knobs(job)
        frames = self.frames(job)
        is_long = frames > self.window_frames
        bucket = frames if is_long else next(b for b in self.buckets if b >= frames)
        return Group(
            is_long,
            bucket,
            is_long and job.melody is not None,
            knobs.use_cfg,
            knobs.do_sample,
            knobs.top_k if knobs.do_sample else 0,
            knobs.use_top_p,
        )

    def melody(self, job: Job) -> np.ndarray:
        """The job's melody as one mono clip at the model's rate."""
        from musicgen_jax import audio
        from musicgen_jax import melody as melody_module

        wave, rate = audio.load(job.melody)
        clip = melody_module.melody_items(wave, 1, rate, self.sampling_rate)[0]
        hop = self.model.feature_extractor.hop_length
        if clip.shape[0] < hop:
            raise JobError(
                f"melody {job.melody}: shorter than one chroma frame ({hop} samples at {self.sampling_rate} Hz)"
            )
        return clip

    def run_batch(self, jobs: list[Job], clips: list[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(codes (K, frames), audio (channels, samples))`` of each job of one :class:`Group` (at most
        ``batch_size``; padded to it with copies of the first). ``clips``: each job's melody (:meth:`melody`) or
        None."""
        group = self.group(jobs[0])
        rows = jobs + [jobs[0]] * (self.settings.batch_size - len(jobs))
        clips = list(clips) + [clips[0]] * (len(rows) - len(jobs))
        per_job = [self.knobs(job) for job in rows]
        first = per_job[0]
        knobs = dataclasses.replace(
            first,
            top_p=tuple(k.top_p for k in per_job),
            temperature=tuple(k.temperature for k in per_job),
            guidance_scale=tuple(k.guidance_scale for k in per_job) if first.use_cfg else first.guidance_scale,
        )
        encoded = self.tokenizer(
            [job.text for job in rows], padding="max_length", max_length=self.settings.text_length, return_tensors="np"
        )
        import jax

        keys = np.stack([np.asarray(jax.random.PRNGKey(job.seed)) for job in rows])
        if group.long_form:
            out = self.model.generate(
                encoded["input_ids"],
                encoded["attention_mask"],
                melody=None if clips[0] is None else clips,  # the group's rows all have one, or none has
                duration=rows[0].duration,
                window_duration=self.settings.window_duration,
                extend_stride=self.settings.extend_stride,
                rng=keys,
                do_sample=knobs.do_sample,
                top_k=knobs.top_k,
                top_p=knobs.top_p,
                temperature=knobs.temperature,
                guidance_scale=knobs.guidance_scale,
                return_dict_in_generate=True,
            )
            return [(out.audio_codes[b], out.sequences[b]) for b in range(len(jobs))]
        return self._one_window(rows, len(jobs), group, knobs, encoded, keys, clips)

    def _one_window(self, rows, count, group: Group, knobs, encoded, keys, clips):
        model, dec = self.model, self.model.config.decoder
        cc = self.channel_codebooks
        text, mask = generation.encode_text(model, encoded["input_ids"], encoded["attention_mask"], len(rows), knobs)
        features = None
        if any(clip is not None for clip in clips):
            features = np.concatenate([self._chroma(clip) for clip in clips])
        conditions = generation.build_conditions(model, text, mask, features, knobs)
        prompt = np.full((len(rows) * dec.num_codebooks, 1), knobs.bos_token_id, np.int64)
        totals = [self.frames(job) + cc for job in rows]  # BOS, the frames, the delays (generate's buffer)
        codes, _ = generation.run_loop_rows(
            model.params["decoder"],
            conditions,
            prompt,
            totals,
            knobs,
            keys,
            dec,
            rules=model.rules,
            capacity=group.frames + cc,
        )
        # the codec decodes the bucket's frames for every row (one program per bucket): rows are padded with
        # their last frame and their audio cut at their own length
        padded = np.concatenate(
            [np.pad(c, ((0, 0), (0, 0), (0, group.frames - c.shape[2])), mode="edge") for c in codes]
        )
        audio = model.decode_audio(padded)
        hop = model.config.audio_encoder.hop_length
        return [(codes[b][0], audio[b, :, : codes[b].shape[2] * hop]) for b in range(count)]

    def _chroma(self, clip: np.ndarray | None) -> np.ndarray:
        """One clip's chroma, tiled to the model's ``chroma_length`` frames as HF does (computed alone, so that the
        padding of a longer neighbour never reaches it): ``(1, chroma_length, C)``. No clip: HF's null chroma
        (one-hot at bin 0, what ``generate`` uses for text alone), tiled the same way."""
        length = self.model.config.chroma_length
        if clip is None:
            from musicgen_jax.conditioning import null_chroma

            feats = np.asarray(null_chroma(self.model.config, 1))
        else:
            feats = self.model.feature_extractor([clip], sampling_rate=self.sampling_rate)["input_features"]
        return np.tile(feats, (1, math.ceil(length / feats.shape[1]), 1))[:, :length]


def plan_batches(runner: Runner, jobs: list[Job]) -> list[list[Job]]:
    """The jobs in batches of at most ``batch_size`` of one :class:`Group` each (groups in order of first line,
    each sorted by length)."""
    groups: dict[Group, list[Job]] = {}
    for job in jobs:
        groups.setdefault(runner.group(job), []).append(job)
    size = runner.settings.batch_size
    batches = []
    for members in groups.values():
        # neighbours of similar length: a batch runs as many steps as its longest row (a row's codes do not depend
        # on its neighbours or its place, so the order is free)
        members = sorted(members, key=lambda job: (runner.frames(job), job.line))
        batches += [members[i : i + size] for i in range(0, len(members), size)]
    return batches


# ---------------------------------------------------------------------------------------------------------------
# The whole run.


@dataclasses.dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # finished by an earlier run
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    compile_seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        return 0 if self.failed == 0 else 1


def run(
    load_model: Callable[[], tuple],
    jobs_path: str,
    out_dir: str,
    settings: Settings,
    *,
    process_id: int = 0,
    num_processes: int = 1,
    progress: bool = True,
) -> Summary:
    """Runs this process's share of the job file. ``load_model()`` -> ``(model, tokenizer)``, called only when
    there is work. Returns the :class:`Summary`; per-job failures are manifest entries, never exceptions."""
    from musicgen_jax import audio, sampling

    started, compiled = time.perf_counter(), sampling.compile_clock()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise JobError(f"--out {out_dir}: is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    items = [item for item in read_jobs(jobs_path) if owner(entry_key(item), num_processes) == process_id]
    manifest = Manifest(out_dir, process_id, num_processes)
    finished = Manifest.finished(out_dir)
    summary = Summary()
    errors, pending = [], []
    for item in items:
        if isinstance(item, BadLine):
            errors.append(error_entry(item, item.error))
        elif item.id in finished:
            summary.skipped += 1
        else:
            pending.append(item)
    runner = None
    if pending:
        model, tokenizer = load_model()
        runner = Runner(model, tokenizer, settings)
        runnable = []
        for job in pending:
            path = os.path.join(out_dir, f"{job.id}.wav")
            try:
                if os.path.exists(path) and not audio.written_by_musicgen_jax(path):
                    raise JobError(f"{path} exists and was not written by musicgen-jax: not replaced")
                runner.check(job)
                runnable.append(job)
            except (JobError, ValueError) as e:
                errors.append(error_entry(job, one_line(e)))
        pending = runnable
    manifest.record(errors)
    summary.failed += len(errors)
    bar = _bar(progress and bool(pending), len(pending))
    batches = plan_batches(runner, pending) if pending else []
    for batch in batches:
        entries = _run_one(runner, batch, out_dir)
        manifest.record(entries)
        for entry in entries:
            if entry["status"] == "ok":
                summary.ok += 1
                summary.audio_seconds += entry["audio_seconds"]
            else:
                summary.failed += 1
        if bar is not None:
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"{summary.audio_seconds / max(elapsed, 1e-9):.2f} audio s/s", refresh=False)
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    summary.wall_seconds = time.perf_counter() - started
    summary.compile_seconds = sampling.compile_clock() - compiled
    return summary


def _run_one(runner: Runner, batch: list[Job], out_dir: str) -> list[dict]:
    """One batch: its WAVs written (atomically) and its manifest entries."""
    from musicgen_jax import audio

    start = time.perf_counter()
    entries, jobs, clips = [], [], []
    for job in batch:  # a melody that does not load fails its job only
        try:
            clips.append(None if job.melody is None else runner.melody(job))
            jobs.append(job)
        except (JobError, ValueError) as e:
            entries.append(error_entry(job, one_line(e)))
    if not jobs:
        return entries
    try:
        results = runner.run_batch(jobs, clips)
    except Exception as e:  # the batch failed as a whole: each of its jobs says why, the run goes on
        if os.environ.get("MUSICGEN_JAX_DEBUG"):
            raise
        return entries + [error_entry(job, one_line(e)) for job in jobs]
    seconds = (time.perf_counter() - start) / len(jobs)
    for job, (_, wave) in zip(jobs, results, strict=True):
        path = os.path.join(out_dir, f"{job.id}.wav")
        try:
            audio.save_wav(path, wave, runner.sampling_rate)
        except ValueError as e:
            entries.append(error_entry(job, one_line(e)))
            continue
        entries.append(
            {
                "id": job.id,
                "line": job.line,
                "status": "ok",
                "error": None,
                "seconds": round(seconds, 3),
                "audio_seconds": wave.shape[-1] / runner.sampling_rate,
                "path": f"{job.id}.wav",
            }
        )
    return entries


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="job", desc="jobs", file=sys.stderr, leave=False)
