"""`export`: write a checkpoint as a real int8 CPU model (ONNX Runtime) or as one rcz file."""

from __future__ import annotations

from pathlib import Path

import click

from robustcompress.cli.common import checkpoint_data, data_options, print_json, user_errors


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["int8", "rcz"]),
    required=True,
    help="int8: a checkpoint folder of the ONNX Runtime int8 model (model.onnx beside it); "
    "rcz: one compressed file (sparse bitmap, cluster indices, entropy coding).",
)
@click.option("--out", type=click.Path(), required=True, help="Output folder (int8) or file (rcz).")
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Training images that calibrate int8 activation ranges.",
)
@data_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of the sizes on stdout.")
@user_errors
def export(
    checkpoint,
    fmt,
    out,
    calibration_images,
    dataset,
    data_root,
    download,
    limit_train,
    limit_test,
    seed,
    as_json,
):
    """Export CHECKPOINT as an int8 CPU model or an rcz compressed file, and report its size."""
    import robustcompress.compression  # noqa: F401  (registers the structures of compressed models)
    from robustcompress.capabilities import native_onnx
    from robustcompress.checkpoint import load_checkpoint, save_checkpoint
    from robustcompress.compression.format import save_compressed
    from robustcompress.compression.quantization.int8 import to_int8
    from robustcompress.evaluation.size import checkpoint_bytes
    from robustcompress.plugins import load_plugins

    load_plugins()
    model, meta = load_checkpoint(checkpoint)
    before = len(checkpoint_bytes(model))
    if fmt == "rcz":
        size = save_compressed(model, out, extra={"parent": str(checkpoint)})
    else:
        onnx = native_onnx(model)
        if onnx is None:  # not yet an ONNX Runtime model: convert it
            from robustcompress.checkpoint import carry_metadata
            from robustcompress.compression.structure import add_structure

            _, splits = checkpoint_data(
                checkpoint,
                meta,
                dataset,
                root=data_root,
                seed=seed,
                limit_train=calibration_images,
                limit_test=limit_test or 1,
                download=download,
            )
            qmodel = carry_metadata(model, to_int8(model, splits.train.x[:calibration_images]))
            add_structure(qmodel, "int8", **qmodel.structure_params())
            model, onnx = qmodel, qmodel.onnx_bytes()
        save_checkpoint(
            out,
            model,
            {k: v for k, v in meta.items() if k not in ("model", "structure")},
            extra_files={"model.onnx": onnx},
        )
        size = (Path(out) / "model.safetensors").stat().st_size
    result = {
        "format": fmt,
        "out": str(out),
        "bytes": size,
        "bytes_checkpoint": before,
        "ratio": before / size,
    }
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"wrote {out}: {size} bytes ({before / size:.2f}x smaller than the checkpoint's {before} bytes)"
        )


COMMANDS = [export]
