"""`gen import`: StyleGAN models trained with other projects' code -> gen run folders that draw their pictures.

pickles.read_model_file reads a file as data (nothing in it runs); a converter per format (nvlabs, stylegan3,
tensorflow, rosinality) turns its networks into our Generator's and Discriminator's state dicts and a ModelConfig;
import_model writes them as an ordinary checkpoint that `gen sample`, `gen export`, `gen walk` and `gen mix` take.
"""

from __future__ import annotations

from pathlib import Path

from gen.runtime.errors import GenError
from gen.runtime.files import output_error

from .. import checkpoint as ckpt
from ..config import to_json
from . import nvlabs, rosinality, stylegan3, tensorflow
from .base import Imported
from .pickles import ModelFile, read_model_file

CONVERTERS = {"stylegan2-ada": nvlabs.convert, "stylegan3": stylegan3.convert, "stylegan2-tf": tensorflow.convert,
              "rosinality": rosinality.convert}


def convert(model: ModelFile) -> tuple[Imported, dict]:
    """A read ModelFile -> (Imported, the checkpoint's tensors: G_ema, G, D prefixed), by its format (NVlabs'
    stylegan3 pickles are stylegan2-ada-pytorch's, told apart by their synthesis layers)."""
    kind = model.format
    if kind == "stylegan2-ada" and stylegan3.is_stylegan3(model.generator):
        kind = "stylegan3"
    if kind not in CONVERTERS:
        raise GenError(f"'{model.path}' is a {kind} file, which gen does not import")
    return CONVERTERS[kind](model)


def import_model(source: str | Path, out: str | Path, overwrite: bool = False) -> Imported:
    """`gen import`: read a model file as data and write a gen run folder (its checkpoint) that draws the same
    pictures. A folder that holds a run already is refused unless `overwrite` (which deletes that run's
    checkpoint, log and grids first)."""
    from ..trainer import RunFolder  # what belongs to a run folder is the trainer's to say

    source, out = Path(source), Path(out)
    if out.exists() and not out.is_dir():
        raise GenError(f"'{out}' is a file; --out names a folder to write the run into")
    run = RunFolder(out, enabled=True)
    if run.earlier_files() and not overwrite:
        raise GenError(f"'{out}' already holds a run ({run.earlier_files()[0].name}, ...); give --overwrite to "
                       "replace it, or choose another --out")
    found, tensors = convert(read_model_file(source))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only or forbidden place, a full disk: one line
        raise (output_error(out, e) or e) from None
    if overwrite:
        run.clear_earlier()
    ckpt.save_checkpoint(run.checkpoint, tensors, {"model": to_json(found.model), "imported": found.record()})
    found.checkpoint = run.checkpoint
    return found


def describe_lines(found: Imported) -> list[str]:
    width = max(len(label) for label, _ in found.rows())
    return [f"{label:<{width}}  {text}" for label, text in found.rows()]
