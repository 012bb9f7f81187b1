"""``zoo encode``: the codes a saved autoencoder gives examples (the command shape of predict)."""

from __future__ import annotations

import click

from zoo.cli.checkpoints import check_array_output, prediction_table, print_notes
from zoo.cli.common import echo, emit_json
from zoo.errors import ConfigError


@click.command("encode")
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.argument("input_path", metavar="INPUT.npy")
@click.option("--out", default=None, metavar="OUT.npy|OUT.npz",
              help="Write the codes (N, code_size): .npy holds the array, .npz holds it as "
                   "'codes'. Without --out they are printed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Examples per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (codes).")
@click.option("--allow-nonfinite", is_flag=True,
              help="Write codes that are NaN or Inf (the model overflowed) instead of failing; "
                   "their rows are listed on stderr.")
def encode_command(checkpoint, input_path, out, batch_size, as_json, allow_nonfinite):
    """Encode the examples of a .npy file with a saved autoencoder.

    INPUT.npy holds one example of the model's input shape, or a batch of them (the first axis
    counts examples). It is read without pickle; it must be numeric and finite.
    """
    from zoo.checkpoints.checkpoint import load_model
    from zoo.inference import check_finite_outputs, describe_rows, read_inputs, write_arrays

    check_array_output(out, "codes")
    model, spec, _, ck = load_model(checkpoint)
    if not callable(getattr(model, "encode", None)):
        raise ConfigError(f"checkpoint {ck.path}: its model ({ck.arch}) has no encoder; "
                          f"zoo encode needs an autoencoder checkpoint (zoo train --arch "
                          f"autoencoder --save PATH)")
    print_notes(ck)
    x = read_inputs(input_path, spec.input_shape, model.dtype)
    codes = model.encode(x, batch_size=batch_size)
    bad = check_finite_outputs(codes, allow_nonfinite, "codes")
    if len(bad):
        click.echo(f"zoo: warning: {len(bad)} of {len(codes)} codes are not finite, "
                   f"{describe_rows(bad)}", err=True)
    if out is not None:
        # write_arrays saves 'values' to a .npy file and every array, by name, to a .npz one
        write_arrays(out, {"codes" if out.lower().endswith(".npz") else "values": codes})
    if as_json:
        emit_json({"checkpoint": ck.path, "examples": len(x), "code_size": codes.shape[1],
                   "out": out, "codes": codes.tolist()})
        return
    if out is not None:
        echo(f"wrote {len(x)} codes of size {codes.shape[1]} to {out}", False)
        return
    echo(prediction_table({"values": codes}, None).replace("values", "code", 1), False)


COMMANDS = [encode_command]
