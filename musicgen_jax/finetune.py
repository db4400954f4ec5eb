"""``musicgen-jax finetune``'s run: :func:`run` fine-tunes MusicGen Melody or MusicGen on a folder of captioned clips.

    musicgen-jax finetune --model PATH --data DIR --out DIR [--steps N --batch-size B --lr LR --duration SECONDS ...]

The command line (flags, help, defaults, the one-line errors with exit status 2) is :mod:`musicgen_jax.cli`'s; the
data pipeline (finding captioned clips, encoding them to codes and chroma with a cache under ``OUT/cache``, the
crops, the batch order) is :mod:`musicgen_jax.data`'s and condition dropout :mod:`musicgen_jax.condition_dropout`'s.
This module checks the arguments, loads the model, and runs :func:`musicgen_jax.training.make_train_step` (AdamW,
warmup-cosine schedule, global-norm clipping, frozen T5 and EnCodec); it logs to stdout and ``OUT/metrics.jsonl``
(with the validation loss every ``--val-every`` steps), writes orbax checkpoints to ``OUT/checkpoints`` and samples
to ``OUT/samples``; a run whose ``OUT`` already holds checkpoints resumes from the latest one. Under
``jax.distributed`` (the CLI's ``--coordinator-address/--num-processes/--process-id``) each process builds its rows
of every global batch, checkpoints are written collectively and process 0 reports.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

from musicgen_jax.data import FinetuneError, batch_positions, find_examples, prepare_dataset, split_examples
from musicgen_jax.errors import one_line

__all__ = ["FinetuneError", "run"]


def _check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "grad_accum", "log_every", "save_every", "keep"):
        if getattr(args, name) < 1:
            raise FinetuneError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("lr", "duration"):
        if not getattr(args, name) > 0:
            raise FinetuneError(f"--{name} must be > 0, got {getattr(args, name)}")
    if args.warmup < 0 or args.weight_decay < 0 or args.clip_norm < 0:
        raise FinetuneError("--warmup, --weight-decay and --clip-norm must be >= 0")
    for name in ("cfg_dropout", "melody_dropout", "word_dropout"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise FinetuneError(f"--{name.replace('_', '-')} must lie in [0, 1], got {value}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise FinetuneError(f"--val-fraction must lie in [0, 1), got {args.val_fraction}")
    if args.sample_every < 0:
        raise FinetuneError(f"--sample-every must be >= 0, got {args.sample_every}")
    if not args.sample_seconds > 0:
        raise FinetuneError(f"--sample-seconds must be > 0, got {args.sample_seconds}")
    if args.val_every is not None and args.val_every < 1:
        raise FinetuneError(f"--val-every must be >= 1, got {args.val_every}")


def _condition_dropout(args: argparse.Namespace, melody_model: bool):
    """The flags' condition dropout over audiocraft's defaults for the model's family (0 turns one off)."""
    from musicgen_jax.condition_dropout import ConditionDropout

    defaults = ConditionDropout.audiocraft_defaults(melody_model)
    if not melody_model and args.melody_dropout:
        raise FinetuneError("--melody-dropout applies to MusicGen Melody models; this model takes no melody")
    return ConditionDropout(
        cfg=defaults.cfg if args.cfg_dropout is None else args.cfg_dropout,
        melody=defaults.melody if args.melody_dropout is None or not melody_model else args.melody_dropout,
        word=defaults.word if args.word_dropout is None else args.word_dropout,
    )


def _examples(args: argparse.Namespace):
    """``(train, validation)`` examples: ``--data`` less the ``--val-fraction`` split, plus ``--val-data``."""
    examples = find_examples(args.data)
    train, val = split_examples(examples, args.val_fraction, args.seed)
    if args.val_data is not None:
        val = val + find_examples(args.val_data)
    return train, val


def _validation_loss(eval_fn, params, data, batch_size: int) -> float:
    """HF's loss over every validation clip (fixed crops, no dropout): per codebook, the summed cross-entropy over
    all scored positions divided by their count, then averaged over codebooks, as one batch of all clips would
    give. The last batch is filled with copies of a clip whose labels are all ignored."""
    import numpy as np

    from musicgen_jax import sharding

    sums = counts = 0.0
    for first in range(0, len(data), batch_size):
        indices = np.arange(first, min(first + batch_size, len(data)))
        batch = data.batch(np.concatenate([indices, np.zeros(batch_size - len(indices), int)]))
        batch["labels"][len(indices) :] = -100
        per_codebook, tokens = (np.asarray(sharding.to_host(x), np.float64) for x in eval_fn(params, batch))
        sums = sums + np.where(tokens > 0, per_codebook * tokens, 0.0)
        counts = counts + tokens
    return float(np.mean(sums / counts))


def _lora_config(args: argparse.Namespace):
    """The ``--lora-*`` flags as a :class:`musicgen_jax.lora.LoraConfig`, or None without ``--lora-rank``."""
    from musicgen_jax import lora

    rank, alpha, targets = getattr(args, "lora_rank", None), getattr(args, "lora_alpha", None), None
    if getattr(args, "lora_targets", None) is not None:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    if rank is None:
        if alpha is not None or targets is not None:
            raise FinetuneError("--lora-alpha and --lora-targets need --lora-rank")
        return None
    try:
        return lora.LoraConfig(rank, alpha, lora.DEFAULT_TARGETS if targets is None else targets)
    except lora.LoraError as e:
        raise FinetuneError(f"--lora-rank/--lora-alpha/--lora-targets: {one_line(e)}") from None


def _mesh(spec: str | None):
    if spec is None:
        return None
    from musicgen_jax import sharding

    try:
        data, model = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise FinetuneError(f"--mesh must look like DATAxMODEL (e.g. 2x4), got {spec!r}") from None
    try:
        return sharding.make_mesh(data, model)
    except ValueError as e:
        raise FinetuneError(f"--mesh {spec}: {one_line(e)}") from None


def _load(model_path: str):
    from musicgen_jax import MusicgenMelodyFeatureExtractor, MusicgenMelodyForConditionalGeneration
    from musicgen_jax.tokenizer import T5TextTokenizer

    if not os.path.isdir(model_path):
        raise FinetuneError(f"{model_path}: no such model directory")
    try:
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(model_path, scan_layers=True, mesh=None)
    except (ValueError, OSError) as e:
        raise FinetuneError(f"{model_path}: cannot load the model ({one_line(e)})") from None
    try:
        tokenizer = T5TextTokenizer.from_pretrained(model_path)
    except (ValueError, OSError, KeyError) as e:
        raise FinetuneError(f"{model_path}: cannot load the tokenizer ({one_line(e)})") from None
    if model.config.decoder.cross_attention:  # plain MusicGen: text only, no chroma to compute
        feature_extractor = None
    elif os.path.isfile(os.path.join(model_path, "preprocessor_config.json")):
        feature_extractor = MusicgenMelodyFeatureExtractor.from_pretrained(model_path)
    else:
        feature_extractor = MusicgenMelodyFeatureExtractor(sampling_rate=model.sampling_rate)
    return model, tokenizer, feature_extractor


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``args`` that go into a checkpoint's JSON metadata (not the CLI's ``command``/``func``)."""
    return {
        name: value
        for name, value in vars(args).items()
        if name not in ("command", "func") and isinstance(value, (str, int, float, bool, type(None)))
    }


def _sampler(args: argparse.Namespace, model, tokenizer):
    """``write(params, step)``: every ``--sample-every`` steps, one WAV per ``--sample-prompts`` text (prompt ``i``
    sampled with seed ``i``, ``--sample-seconds`` long, the checkpoint's generation config otherwise) written
    atomically to ``OUT/samples/step-NNNNNN/i.wav``; the same parameters give the same audio. A collective under
    ``jax.distributed`` (every process gathers the parameters; process 0 generates and writes)."""
    import jax

    from musicgen_jax import audio, sharding

    prompts = args.sample_prompts or list(DEFAULT_SAMPLE_PROMPTS)
    text = tokenizer(prompts, padding="longest", return_tensors="np")

    def write(params, step: int) -> str:
        if jax.process_count() > 1:
            params = jax.tree_util.tree_map(sharding.to_host, params)
        folder = os.path.join(args.out, "samples", f"step-{step:06d}")
        if jax.process_index() != 0:
            return folder
        sampler = type(model)(model.config, params, model.generation_config)
        os.makedirs(folder, exist_ok=True)
        for i in range(len(prompts)):
            wave = sampler.generate(
                input_ids=text["input_ids"][i : i + 1],
                attention_mask=text["attention_mask"][i : i + 1],
                duration=args.sample_seconds,
                do_sample=True,
                seed=i,
            )
            audio.save_wav(os.path.join(folder, f"{i}.wav"), wave[0], model.sampling_rate)
        return folder

    return write


DEFAULT_SAMPLE_PROMPTS = ("a calm piano melody", "energetic rock with drums and electric guitar")


def _quiet(_: str) -> None:
    pass


def _scalar(x) -> float:
    """A replicated scalar as a Python float on this process (its own copy: no collective)."""
    import numpy as np

    shards = getattr(x, "addressable_shards", None)
    return float(np.asarray(shards[0].data if shards else x))


def _feeder(mesh, batch_size: int):
    """``(rows, put)``: the rows of the global batch this process builds (a ``range``) and ``put``, which turns
    this process's rows (numpy) into the step's global input arrays, split over the mesh's ``data`` axis. One
    process builds every row; under ``jax.distributed`` each builds the rows its devices hold, and
    ``jax.make_array_from_process_local_data`` assembles the global arrays."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from musicgen_jax import sharding

    if jax.process_count() == 1:
        if mesh is None:
            return range(batch_size), lambda batch: jax.tree_util.tree_map(jnp.asarray, batch)
        return range(batch_size), lambda batch: sharding.shard_batch(batch, mesh)
    held = sharding.batch_sharding(mesh, 1, batch_size).addressable_devices_indices_map((batch_size,))
    starts = [index[0].start or 0 for index in held.values()]
    stops = [batch_size if index[0].stop is None else index[0].stop for index in held.values()]
    rows = range(min(starts), max(stops))

    def put(batch):
        out = {}
        for name, value in batch.items():
            value = np.asarray(value)
            placement = sharding.batch_sharding(mesh, value.ndim, batch_size)
            shape = (batch_size, *value.shape[1:])
            out[name] = jax.make_array_from_process_local_data(placement, value, shape)
        return out

    return rows, put


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The fine-tuning run of ``args``, parsed by ``musicgen_jax.cli.build_parser().parse_args(["finetune", ...])``
    (every flag of ``musicgen-jax finetune --help`` as an attribute: ``model``, ``data``, ``out``, ``steps``,
    ``batch_size``, ...); returns ``{"step", "loss", "checkpoint"}`` of the last step. Bad input raises
    :class:`FinetuneError` (or :class:`musicgen_jax.audio.AudioError`, ``OSError``) with a one-line message."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from musicgen_jax import lora, sharding, training

    _check_args(args)
    lora_config = _lora_config(args)
    examples, val_examples = _examples(args)
    mesh = _mesh(args.mesh)
    if jax.process_count() > 1:
        if mesh is None:  # several processes: data parallel over every device of the job
            mesh = sharding.make_mesh(len(jax.devices()), 1)
        if jax.process_index() != 0:
            log = _quiet  # process 0 reports for the job
    model, tokenizer, feature_extractor = _load(args.model)
    dropout = _condition_dropout(args, feature_extractor is not None)
    os.makedirs(args.out, exist_ok=True)
    prepare = functools.partial(
        prepare_dataset,
        model,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        duration=args.duration,
        cache_dir=os.path.join(args.out, "cache"),
        model_path=args.model,
        log=log,
    )
    data = prepare(examples)
    val_data = prepare(val_examples, name="validation") if val_examples else None
    val_every = args.save_every if args.val_every is None else args.val_every
    if mesh is not None and args.batch_size % mesh.shape[sharding.DATA]:
        raise FinetuneError(
            f"--batch-size {args.batch_size} is not divisible by the mesh's data axis "
            f"({mesh.shape[sharding.DATA]} devices{f', --mesh {args.mesh}' if args.mesh else ''})"
        )

    updates = math.ceil(args.steps / args.grad_accum)
    schedule = training.make_schedule(args.lr, warmup_steps=args.warmup, total_steps=updates)
    optimizer = training.make_optimizer(
        schedule,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm or None,
        accumulation_steps=args.grad_accum,
    )
    trainable = training.default_trainable(model.params, train_text_encoder=args.train_text_encoder)
    params = model.params
    if lora_config is not None:  # the adapters train (and T5 when asked); the decoder and projections are frozen
        try:
            lora_config.check(model.config)
        except lora.LoraError as e:
            raise FinetuneError(f"--lora-targets: {one_line(e)}") from None
        adapters = lora.init(jax.random.fold_in(jax.random.PRNGKey(args.seed), 1), params["decoder"], lora_config)
        params = {**params, lora.PART: adapters}
        trainable = (lora.PART, *(("text_encoder",) if args.train_text_encoder else ()))
    state = training.init_train_state(params, optimizer, trainable, seed=args.seed)
    if mesh is not None:
        # from host copies: every process holds the same values, and the placement spans every process's devices
        state = sharding.shard_params(jax.tree_util.tree_map(np.asarray, state), mesh)
    manager = training.checkpoint_manager(os.path.join(args.out, "checkpoints"), max_to_keep=args.keep)
    metadata = {"model": os.path.abspath(args.model), "trainable": list(trainable), "args": _options(args)}
    if lora_config is not None:
        metadata["lora"] = lora_config.to_json()
    if manager.latest_step() is not None:
        state, _ = training.restore_checkpoint(manager, state)
        log(f"resuming from {manager.directory}/{int(_scalar(state.step))}")
    train_step = training.make_train_step(
        model.config,
        optimizer,
        trainable=trainable,
        compute_dtype=jnp.bfloat16 if args.bf16 else None,
        dropout=not args.no_dropout,
        lora=lora_config,
        remat=getattr(args, "remat", False),
    )
    B, K = args.batch_size, model.config.decoder.num_codebooks
    T = data.frames + K // model.config.decoder.audio_channels - 1  # the delay pattern's length
    log(
        f"training {', '.join(trainable)} for {args.steps} steps: batch {B} x {T} positions x {K} codebooks, "
        f"text {data.input_ids.shape[1]} tokens"
        + ("" if data.chroma is None else f", chroma {data.chroma_frames} frames")
        + f"; condition dropout {dropout.cfg:g}, melody {dropout.melody:g}, words {dropout.word:g}"
    )
    rows, put = _feeder(mesh, B)
    sample = _sampler(args, model, tokenizer) if args.sample_every else None
    eval_fn = None
    if val_data is not None:
        from musicgen_jax.loss import loss_and_metrics

        config = model.config

        def evaluate(params, batch):
            _, aux = loss_and_metrics(params, config, batch)
            return aux["per_codebook"], aux["tokens_K"]

        jitted_eval = jax.jit(evaluate)

        def eval_fn(params, batch):
            batch = put({k: v[rows.start : rows.stop] for k, v in batch.items()})
            with sharding.context(params):
                return jitted_eval(params, batch)

    first = int(_scalar(state.step))
    loss = float("nan")
    last_time, last_step = time.perf_counter(), first
    metrics_path = os.path.join(args.out, "metrics.jsonl") if jax.process_index() == 0 else os.devnull
    with open(metrics_path, "a", encoding="utf-8") as metrics_file:
        for step in range(first, args.steps):
            indices, epochs = (x[rows.start : rows.stop] for x in batch_positions(step, len(data), B, args.seed))
            batch = put(data.batch(indices, epochs=epochs, seed=args.seed, step=step, rows=rows, dropout=dropout))
            state, metrics = train_step(state, batch)
            done = step + 1
            if done % args.log_every == 0 or done == args.steps or done == first + 1:
                loss = _scalar(metrics["loss"])  # waits for the step
                now = time.perf_counter()
                steps_per_s = (done - last_step) / max(now - last_time, 1e-9)
                record = {
                    "step": done,
                    "loss": loss,
                    "grad_norm": _scalar(metrics["grad_norm"]),
                    "lr": float(schedule((done - 1) // args.grad_accum)),  # of the latest update
                    "steps_per_s": steps_per_s,
                    "tokens_per_s": steps_per_s * B * T * K,
                    "audio_s_per_s": steps_per_s * B * args.duration,
                }
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                note = " (includes compilation)" if done == first + 1 else ""
                log(
                    f"step {done}/{args.steps}  loss {loss:.4f}  grad_norm {record['grad_norm']:.3f}  "
                    f"lr {record['lr']:.2e}  {record['tokens_per_s']:.0f} tokens/s  "
                    f"{record['audio_s_per_s']:.2f} audio s/s{note}"
                )
                last_time, last_step = now, done
            if eval_fn is not None and (done % val_every == 0 or done == args.steps):
                val_loss = _validation_loss(eval_fn, state.params, val_data, B)
                metrics_file.write(json.dumps({"step": done, "val_loss": val_loss}) + "\n")
                metrics_file.flush()
                log(f"step {done}/{args.steps}  val_loss {val_loss:.4f} ({len(val_data)} clips)")
            if done % args.save_every == 0 or done == args.steps:
                training.save_checkpoint(manager, state, metadata)
                if lora_config is not None:  # the adapters alone too, for generate --lora / from_pretrained(lora=)
                    lora_note = {"model": metadata["model"], "step": done}
                    lora.save(os.path.join(args.out, "lora"), state.params[lora.PART], lora_config, lora_note)
            if sample is not None and done % args.sample_every == 0:
                log(f"step {done}/{args.steps}  samples: {sample(state.params, done)}")
    manager.close()
    final = int(_scalar(state.step))
    checkpoint = os.path.join(os.fspath(manager.directory), str(final))
    log(f"checkpoint: {checkpoint}" + ("" if lora_config is None else f"; LoRA adapters: {args.out}/lora"))
    return {"step": final, "loss": loss, "checkpoint": checkpoint}
