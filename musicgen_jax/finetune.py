"""``musicgen-jax finetune``'s run: :func:`run` fine-tunes MusicGen Melody on a folder of captioned audio clips.

    musicgen-jax finetune --model PATH --data DIR --out DIR [--steps N --batch-size B --lr LR --duration SECONDS ...]

The command line (flags, help, defaults, the one-line errors with exit status 2) is :mod:`musicgen_jax.cli`'s; the
data pipeline (finding captioned clips, encoding them to codes and chroma with a cache under ``OUT/cache``, the batch
order) is :mod:`musicgen_jax.data`'s. This module checks the arguments, loads the model, and runs
:func:`musicgen_jax.training.make_train_step` (AdamW, warmup-cosine schedule, global-norm clipping, frozen T5 and
EnCodec); it logs to stdout and ``OUT/metrics.jsonl`` and writes orbax checkpoints to ``OUT/checkpoints``; a run
whose ``OUT`` already holds checkpoints resumes from the latest one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

from musicgen_jax.data import FinetuneError, batch_indices, find_examples, prepare_dataset
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
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(model_path, scan_layers=True)
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


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The fine-tuning run of ``args``, parsed by ``musicgen_jax.cli.build_parser().parse_args(["finetune", ...])``
    (every flag of ``musicgen-jax finetune --help`` as an attribute: ``model``, ``data``, ``out``, ``steps``,
    ``batch_size``, ...); returns ``{"step", "loss", "checkpoint"}`` of the last step. Bad input raises
    :class:`FinetuneError` (or :class:`musicgen_jax.audio.AudioError`, ``OSError``) with a one-line message."""
    import jax
    import jax.numpy as jnp

    from musicgen_jax import lora, sharding, training

    _check_args(args)
    lora_config = _lora_config(args)
    examples = find_examples(args.data)
    mesh = _mesh(args.mesh)
    model, tokenizer, feature_extractor = _load(args.model)
    os.makedirs(args.out, exist_ok=True)
    data = prepare_dataset(
        model,
        examples,
        tokenizer,
        feature_extractor,
        duration=args.duration,
        cache_dir=os.path.join(args.out, "cache"),
        model_path=args.model,
        log=log,
    )
    if mesh is not None and args.batch_size % mesh.shape[sharding.DATA]:
        raise FinetuneError(f"--batch-size {args.batch_size} is not divisible by the mesh's data axis ({args.mesh})")

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
        state = sharding.shard_params(state, mesh)
    manager = training.checkpoint_manager(os.path.join(args.out, "checkpoints"), max_to_keep=args.keep)
    metadata = {"model": os.path.abspath(args.model), "trainable": list(trainable), "args": _options(args)}
    if lora_config is not None:
        metadata["lora"] = lora_config.to_json()
    if manager.latest_step() is not None:
        state, _ = training.restore_checkpoint(manager, state)
        log(f"resuming from {manager.directory}/{int(state.step)}")
    train_step = training.make_train_step(
        model.config,
        optimizer,
        trainable=trainable,
        compute_dtype=jnp.bfloat16 if args.bf16 else None,
        dropout=not args.no_dropout,
        lora=lora_config,
        remat=getattr(args, "remat", False),
    )
    B, T, K = args.batch_size, data.labels.shape[1], data.labels.shape[2]
    log(
        f"training {', '.join(trainable)} for {args.steps} steps: batch {B} x {T} positions x {K} codebooks, "
        f"text {data.input_ids.shape[1]} tokens"
        + ("" if data.input_features is None else f", chroma {data.input_features.shape[1]} frames")
    )

    first = int(state.step)
    loss = float("nan")
    last_time, last_step = time.perf_counter(), first
    with open(os.path.join(args.out, "metrics.jsonl"), "a", encoding="utf-8") as metrics_file:
        for step in range(first, args.steps):
            batch = data.batch(batch_indices(step, len(data), B, args.seed))
            batch = (
                sharding.shard_batch(batch, mesh) if mesh is not None else jax.tree_util.tree_map(jnp.asarray, batch)
            )
            state, metrics = train_step(state, batch)
            done = step + 1
            if done % args.log_every == 0 or done == args.steps or done == first + 1:
                loss = float(metrics["loss"])  # waits for the step
                now = time.perf_counter()
                steps_per_s = (done - last_step) / max(now - last_time, 1e-9)
                record = {
                    "step": done,
                    "loss": loss,
                    "grad_norm": float(metrics["grad_norm"]),
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
            if done % args.save_every == 0 or done == args.steps:
                training.save_checkpoint(manager, state, metadata)
                if lora_config is not None:  # the adapters alone too, for generate --lora / from_pretrained(lora=)
                    lora_note = {"model": metadata["model"], "step": done}
                    lora.save(os.path.join(args.out, "lora"), state.params[lora.PART], lora_config, lora_note)
    manager.close()
    checkpoint = os.path.join(os.fspath(manager.directory), str(int(state.step)))
    log(f"checkpoint: {checkpoint}" + ("" if lora_config is None else f"; LoRA adapters: {args.out}/lora"))
    return {"step": int(state.step), "loss": loss, "checkpoint": checkpoint}
