"""`musicgen-jax verify` on tiny random HF checkpoints of both families (MusicGen Melody, plain MusicGen): passes on
good weights, names the failing check on bad ones, fails the config row against the other family."""

import os
import subprocess
import sys

import numpy as np
import pytest

from musicgen_jax import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration, verify
from musicgen_jax.cli import main
from tests.helpers import save_hf_melody, save_hf_melody_with_processor, save_hf_musicgen

# 6 greedy steps (2 frames past the 4-codebook delay) under guidance; the same flags everywhere, so each jitted
# program compiles once for the module and the subprocess finds it in the session's compilation cache.
FLAGS = ["--steps", "6", "--guidance-scale", "3"]
HF_CHECKS = ["f32 T5 states vs HF", "f32 prefix (T5 + chroma) vs HF", "f32 logits vs HF", "f32 greedy codes vs HF"]
PLAIN_CHECKS = ["f32 T5 states vs HF", "f32 text states (projected) vs HF", "f32 logits vs HF", "f32 audio vs HF"]
PLAIN = {"decoder": {"hidden_size": 20, "num_attention_heads": 4}}  # decoder 20 != T5 16: enc_to_dec_proj exists


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_hf_melody_with_processor(tmp_path_factory.mktemp("hf"))  # with a tokenizer: the real prompts


@pytest.fixture(scope="module")
def converted(hf_dir, tmp_path_factory):
    dst = tmp_path_factory.mktemp("converted") / "model"
    MusicgenMelodyForConditionalGeneration.from_pretrained(hf_dir).save_pretrained(dst)
    return str(dst)


@pytest.fixture(scope="module")
def plain_hf_dir(tmp_path_factory):
    return save_hf_musicgen(tmp_path_factory.mktemp("plain"), **PLAIN)[0]  # no tokenizer: synthetic token ids


@pytest.fixture(scope="module")
def plain_converted(plain_hf_dir, tmp_path_factory):
    dst = tmp_path_factory.mktemp("plain_converted") / "model"
    MusicgenForConditionalGeneration.from_pretrained(plain_hf_dir).save_pretrained(dst)
    return str(dst)


def _verify(capsys, *argv):
    code = main(["verify", *argv])
    captured = capsys.readouterr()
    print(captured.out)  # the table, for `pytest -s`
    return code, captured.out, captured.err


def _rows(out):
    """{check: (result, whole line)} from the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("check "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        for status in (" PASS", " FAIL", " SKIP"):
            if status + " " in line + " ":
                rows[line.split("  ")[0].strip()] = (status.strip(), line)
                break
    return rows


def _one_line_error(code, err):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_passes_on_an_hf_checkpoint(hf_dir, capsys):
    code, out, err = _verify(capsys, "--model", hf_dir, *FLAGS)
    assert code == 0, out + err
    rows = _rows(out)
    assert len(rows) == 9 and all(status == "PASS" for status, _ in rows.values()), out
    for check in HF_CHECKS:
        assert any(name.startswith(check) for name in rows), check
    assert f"musicgen-jax verify: {hf_dir} (model_type musicgen_melody)" in out.splitlines()[0]
    assert "backend cpu" in out and "x cpu" in out and "matmul precision: float32 weights HIGHEST" in out
    assert "through the checkpoint's tokenizer" in out and "guidance_scale 3" in out
    assert "9 passed, 0 failed, 0 skipped" in out


def test_subprocess_exit_code(hf_dir):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "musicgen_jax.cli", "verify", "--model", hf_dir, *FLAGS],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "9 passed, 0 failed" in proc.stdout


def test_converted_directory_against_its_hf_original(converted, hf_dir, capsys):
    code, out, err = _verify(capsys, "--model", converted, "--hf", hf_dir, *FLAGS)
    assert code == 0, out + err
    assert all(status == "PASS" for status, _ in _rows(out).values()), out


def test_converted_directory_alone_skips_the_hf_rows(converted, capsys):
    code, out, err = _verify(capsys, "--model", converted, *FLAGS)
    assert code == 0, out + err
    rows = _rows(out)
    hf_rows = {name: row for name, row in rows.items() if "vs HF" in name}
    assert len(hf_rows) == 5 and all(status == "SKIP" for status, _ in hf_rows.values()), out
    assert all("pass --hf PATH" in line for _, line in hf_rows.values())
    assert "HF reference: skipped (a converted musicgen-jax checkpoint" in out
    bf16 = {name: row for name, row in rows.items() if name.startswith("bf16")}
    assert len(bf16) == 3 and all(status == "PASS" for status, _ in bf16.values()), out


def test_a_perturbed_decoder_weight_fails_the_logits(converted, hf_dir, tmp_path, capsys):
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(converted)
    heads = model.params["decoder"]["lm_heads"]  # (K, D, V)
    model.params["decoder"]["lm_heads"] = heads.at[0, :, 3].add(0.5)
    model.save_pretrained(tmp_path / "bad")
    code, out, _ = _verify(capsys, "--model", str(tmp_path / "bad"), "--hf", hf_dir, *FLAGS)
    assert code == verify.EXIT_MISMATCH == 1
    rows = _rows(out)
    assert rows["f32 T5 states vs HF"][0] == "PASS" and rows["f32 prefix (T5 + chroma) vs HF"][0] == "PASS"
    assert rows["f32 logits vs HF"][0] == "FAIL"
    assert "FAILED (" in out and "f32 logits vs HF" in out.splitlines()[-1]


def test_another_random_checkpoint_as_hf_fails(hf_dir, tmp_path, capsys):
    other, _ = save_hf_melody(tmp_path / "other", seed=1, decoder={"hidden_size": 20, "num_attention_heads": 4})
    code, out, _ = _verify(capsys, "--model", hf_dir, "--hf", other, *FLAGS)
    assert code == 1
    rows = _rows(out)
    assert rows["config vs HF"][0] == "PASS"
    assert rows["f32 T5 states vs HF"][0] == "FAIL" and rows["f32 logits vs HF"][0] == "FAIL"


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--model", "/nonexistent"], "/nonexistent: no such checkpoint directory"),
        (["--model", "HF", "--steps", "0"], "--steps must be positive"),
        (["--model", "HF", "--steps", "2"], "needs at least 4"),
        (["--model", "HF", "--rtol", "nan"], "--rtol must be"),
        (["--model", "HF", "--hf", "CONVERTED"], "is a converted musicgen-jax checkpoint"),
        (["--model", "HF", "--steps", "x"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(hf_dir, converted, capsys, argv, match):
    argv = [{"HF": hf_dir, "CONVERTED": converted}.get(a, a) for a in argv]
    try:
        code = main(["verify", *argv])
    except SystemExit as e:  # argparse's own errors exit from inside the parser
        code = e.code
    captured = capsys.readouterr()
    line = _one_line_error(code, captured.err)
    assert match in line, line
    assert captured.out == ""


def test_synthetic_inputs_without_a_tokenizer(hf_dir):
    config = MusicgenMelodyForConditionalGeneration.from_pretrained(hf_dir).config
    a, b = verify.make_inputs(config, None), verify.make_inputs(config, None)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)  # fixed
    assert a.input_ids.max() < config.text_encoder.vocab_size and a.attention_mask[1, -2:].sum() == 0
    assert a.decoder_input_ids.shape == (2 * config.decoder.num_codebooks, 8)
    assert (a.decoder_input_ids[:, 0] == config.decoder.bos_token_id).all() and "synthetic" in a.source


def test_rows_fail_on_non_finite_and_name_the_first_differing_code():
    ref = np.ones((2, 3))
    assert verify.close_row("x", ref * np.nan, ref, 1e-4).status == "FAIL"
    assert verify.close_row("x", ref + 1e-6, ref, 1e-4).status == "PASS"
    assert verify.close_row("x", ref[:1], ref, 1e-4).note.startswith("shape")
    codes = np.zeros((1, 4, 3), int)
    other = codes.copy()
    other[0, 2, 1] = 5
    row = verify.codes_row("codes", other, codes)
    assert row.status == "FAIL" and "codebook 2, frame 1" in row.note and row.measure == "agree 91.67%"
    assert verify.codes_row("codes", other, codes, None).status == "PASS"  # bf16: reported only


def test_importing_verify_imports_no_torch():
    code = "import sys, musicgen_jax.verify, musicgen_jax.cli; assert not {'torch', 'transformers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------------------------
# Plain MusicGen (text through cross-attention, no melody)


def test_plain_musicgen_passes_on_an_hf_checkpoint(plain_hf_dir, capsys):
    code, out, err = _verify(capsys, "--model", plain_hf_dir, *FLAGS)
    assert code == 0, out + err
    rows = _rows(out)
    assert len(rows) == 9 and all(status == "PASS" for status, _ in rows.values()), out
    for check in PLAIN_CHECKS:
        assert check in rows, check
    assert not any("prefix" in name for name in rows)
    assert out.splitlines()[0] == f"musicgen-jax verify: {plain_hf_dir} (model_type musicgen)"
    inputs = next(line for line in out.splitlines() if line.startswith("inputs:"))
    assert "synthetic token ids" in inputs and "chroma" not in inputs, inputs


def test_plain_converted_directory_against_its_hf_original(plain_converted, plain_hf_dir, capsys):
    code, out, err = _verify(capsys, "--model", plain_converted, "--hf", plain_hf_dir, *FLAGS)
    assert code == 0, out + err
    rows = _rows(out)
    assert len(rows) == 9 and all(status == "PASS" for status, _ in rows.values()), out


def test_plain_perturbed_text_projection_fails_the_projected_states(plain_converted, plain_hf_dir, tmp_path, capsys):
    model = MusicgenForConditionalGeneration.from_pretrained(plain_converted)
    model.params["text_proj"]["kernel"] = model.params["text_proj"]["kernel"].at[0, 0].add(0.5)
    model.save_pretrained(tmp_path / "bad")
    code, out, _ = _verify(capsys, "--model", str(tmp_path / "bad"), "--hf", plain_hf_dir, *FLAGS)
    assert code == 1
    rows = _rows(out)
    assert rows["f32 T5 states vs HF"][0] == "PASS"
    assert rows["f32 text states (projected) vs HF"][0] == "FAIL" and rows["f32 logits vs HF"][0] == "FAIL"


def test_plain_against_another_random_plain_checkpoint_fails(plain_hf_dir, tmp_path, capsys):
    other, _ = save_hf_musicgen(tmp_path / "other", seed=1, **PLAIN)
    code, out, _ = _verify(capsys, "--model", plain_hf_dir, "--hf", other, *FLAGS)
    assert code == verify.EXIT_MISMATCH == 1
    rows = _rows(out)
    assert rows["config vs HF"][0] == "PASS"
    for check in PLAIN_CHECKS[:3]:
        assert rows[check][0] == "FAIL", check
    assert "FAILED (" in out.splitlines()[-1]


def test_plain_against_a_melody_reference_fails_the_config_row(plain_hf_dir, hf_dir, capsys):
    # the family mismatch is a mismatch (FAIL row, exit 1), not bad input: the HF rows are skipped, bf16 rows run
    code, out, _ = _verify(capsys, "--model", plain_hf_dir, "--hf", hf_dir, *FLAGS)
    assert code == 1
    rows = _rows(out)
    status, line = rows["config vs HF"]
    assert status == "FAIL" and "model_type: 'musicgen' != 'musicgen_melody'" in line, line
    hf_rows = [row for name, row in rows.items() if name.startswith("f32")]
    assert len(hf_rows) == 5 and all(s == "SKIP" and "the configs differ" in line for s, line in hf_rows)
    assert all(rows[name][0] == "PASS" for name in rows if name.startswith("bf16"))
    assert out.splitlines()[-1].startswith("FAILED (config vs HF)")
