"""`export`: write a checkpoint as an ONNX file, an int8 ONNX Runtime model or one rcz file.

ONNX and int8 exports are checked after writing (ONNX Runtime against the model, on a
calibration batch) and kept only if they predict alike; see docs/format.md, "Export".
"""

from __future__ import annotations

import click

from robustcompress.cli.common import checkpoint_data, data_options, print_json, user_errors

EXAMPLES = """
\b
Examples:
  robustcompress export runs/pruned --format onnx --out pruned.onnx --json
  robustcompress export runs/pcqat --format int8 --out runs/pcqat-int8 --calibration-images 256
  robustcompress export runs/pcqat --format rcz --out pcqat.rcz
"""


@click.command(epilog=EXAMPLES)
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "int8", "rcz"]),
    required=True,
    help="onnx: one float ONNX file (masks, clusters and fake quantization baked in); "
    "int8: a checkpoint folder of the ONNX Runtime int8 model (model.onnx beside it); "
    "rcz: one compressed file (sparse bitmap, cluster indices, entropy coding).",
)
@click.option("--out", type=click.Path(), required=True, help="Output file (onnx, rcz) or folder (int8).")
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Training images that calibrate int8 activation ranges and check ONNX Runtime against PyTorch.",
)
@click.option(
    "--latency-runs",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="ONNX Runtime runs (one thread) whose median latency is reported, "
    "at batch 1 and at the calibration batch.",
)
@data_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object of sizes, parity and latency on stdout."
)
@user_errors
def export(
    checkpoint,
    fmt,
    out,
    calibration_images,
    latency_runs,
    data,
    seed,
    as_json,
):
    """Export CHECKPOINT as ONNX, int8 ONNX Runtime or rcz, and report its size.

    onnx and int8 files are run in ONNX Runtime on the calibration images after writing; unless
    every image gets the model's class and the logits agree within the tolerance, the export
    fails (exit 2) and nothing is left at --out.
    """
    import robustcompress.compression  # noqa: F401  (registers the structures of compressed models)
    from robustcompress.checkpoint import load_checkpoint
    from robustcompress.compression.format import export_int8_checked, export_onnx_checked, save_compressed
    from robustcompress.evaluation.size import checkpoint_bytes
    from robustcompress.plugins import load_plugins

    load_plugins()
    model, meta = load_checkpoint(checkpoint)
    before = len(checkpoint_bytes(model))
    if fmt == "rcz":
        size = save_compressed(model, out, extra={"parent": str(checkpoint)})
        result = {"format": fmt, "out": str(out), "bytes": size}
    else:
        _, splits = checkpoint_data(
            checkpoint,
            meta,
            data,
            seed=seed,
            limit_train=calibration_images,
            val_fraction=0.0,  # every image asked for calibrates and checks
            limit_test=data.limit_test or 1,
        )
        x = splits.train.x[:calibration_images]
        if fmt == "onnx":
            report = export_onnx_checked(model, x, out, latency_runs=latency_runs)
        else:
            kept = {k: v for k, v in meta.items() if k not in ("model", "structure")}
            report = export_int8_checked(model, x, out, kept, latency_runs=latency_runs)
        result = {**report.as_dict(), "out": str(out)}
        result.pop("path")
        size = report.bytes
    result.update(bytes_checkpoint=before, ratio=before / size)
    if as_json:
        print_json(result)
        return
    ratio = f"{before / size:.2f}x smaller than the checkpoint's {before} bytes"
    click.echo(f"wrote {out}: {size} bytes ({ratio})")
    if fmt != "rcz":
        click.echo(
            f"checked: ONNX Runtime gives PyTorch's class on {result['parity_argmax_agree']} of "
            f"{result['parity_images']} calibration images, max |logit difference| "
            f"{result['parity_max_abs_diff']:.2g} (tolerance {result['parity_tolerance']:.2g}); "
            f"latency {result['latency_ms_batch1']:.2f} ms at batch 1, {result['latency_ms_batch']:.1f} ms "
            f"at batch {result['latency_batch_size']} (one thread)"
        )


COMMANDS = [export]
