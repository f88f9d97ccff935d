"""Shows what an objective declares about itself (`Objective.test_artifacts`, `Objective.sample_media`) at
the end of testing: written into the run dir as files (what the run's report shows) and given to every
logger that shows pictures or text (W&B, TensorBoard, MLflow), each in its own form."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning_utilities.core.apply_func import apply_to_collection

from dlforge.objectives.base import data_tokenizer
from dlforge.objectives.media import (
    Audio,
    ClassScores,
    ConfusionMatrix,
    Heatmap,
    Images,
    Media,
    Table,
    TestArtifact,
)
from dlforge.report import figures


class MediaLogger(Callback):
    """The test artifacts and the sample media of the first `samples` inputs of the first test batch, as
    `<directory>/<key>.png` (pictures), `<directory>/<key>.json` (tables: columns and rows) and
    `<directory>/<key>/<n>.wav` (sound, with `<directory>/<key>.json`: a table of the clips and their captions),
    then in each logger (pictures, heatmaps among them, as the PNG files' pixels). The global-zero process's
    media alone are kept and shown (W&B's run on other ranks is a dummy), but every rank computes them, on the
    global-zero's inputs: a sharded model (FSDP) gathers each layer from all ranks in its forward, so a forward
    on one rank alone would wait for the others forever, and the same inputs make a generation stop at the
    same step on every rank."""

    def __init__(self, directory: str | Path, samples: int = 16):
        self.directory = Path(directory)
        self.samples = samples
        self.media: list[Media] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0:
            return
        # through the CPU: a CUDA tensor unpickles onto the device it was sent from, not the receiving rank's
        head = [apply_to_collection(part[: self.samples], torch.Tensor, torch.Tensor.cpu) for part in batch]
        head = move_data_to_device(trainer.strategy.broadcast(head), pl_module.device)  # targets may be dicts
        with torch.no_grad():
            media = pl_module.sample_media(head, data_tokenizer(trainer.datamodule))
        if trainer.is_global_zero:
            self.media = media

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        # per-class scores are shown as tables (and kept as plain data in metrics.json)
        artifacts = [item.table() if isinstance(item, ClassScores) else item for item in pl_module.test_artifacts()]
        items = [*artifacts, *self.media]
        files = {item.key: write_media(item, self.directory) for item in items}
        for logger in trainer.loggers:
            show = next((show for kind, show in SHOWN_BY.items() if isinstance(logger, kind)), None)
            if show is not None and items:
                show(logger, items, files, trainer.global_step)
        self.media = []


def write_media(item: TestArtifact | Media, directory: Path) -> Path:
    """`item` as a file under `directory`, named by its key (`test/predictions` -> `test/predictions.png`)."""
    if isinstance(item, Table):
        path = directory / f"{item.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"columns": item.columns, "rows": item.rows}, ensure_ascii=False, indent=1))
        return path
    if isinstance(item, Audio):  # a dir of clips
        import soundfile

        path = directory / item.key
        path.mkdir(parents=True, exist_ok=True)
        for number, wave in enumerate(item.waves):
            soundfile.write(path / f"{number}.wav", wave.float().clamp(-1, 1).numpy(), item.sample_rate)
        rows = [[f"{item.key}/{number}.wav", caption] for number, caption in enumerate(item.captions)]
        write_media(Table(item.key, ["audio", "caption"], rows), directory)
        return path
    path = directory / f"{item.key}.png"
    if isinstance(item, ConfusionMatrix):
        figures.png(figures.confusion_matrix(item.matrix.numpy()), path)
    elif isinstance(item, Images):
        figures.png(figures.image_grid(item.images.float().numpy(), item.captions, item.columns), path)
    elif isinstance(item, Heatmap):
        figures.png(figures.heatmap(item.matrix.float().numpy(), item.rows, item.columns, *item.axes), path)
    else:
        raise TypeError(f"no file form for {type(item).__name__}")
    return path


def _show_in_wandb(logger: WandbLogger, items: list, files: dict[str, Path], step: int) -> None:
    """Images one by one with their captions (W&B's media browser), tables as W&B tables."""
    import wandb

    def form(item: TestArtifact | Media) -> Any:
        if isinstance(item, Images):
            return [wandb.Image(_unit_range(image), caption=text) for image, text in zip(item.images, item.captions)]
        if isinstance(item, Audio):
            return [
                wandb.Audio(wave.float().numpy(), sample_rate=item.sample_rate, caption=text)
                for wave, text in zip(item.waves, item.captions)
            ]
        if isinstance(item, Table):
            return wandb.Table(columns=item.columns, data=item.rows)
        return wandb.Image(str(files[item.key]))

    logger.experiment.log({item.key: form(item) for item in items})


def _show_in_tensorboard(logger: TensorBoardLogger, items: list, files: dict[str, Path], step: int) -> None:
    """Pictures as images (the files' pixels), sound as audio (captions as text), tables as Markdown text."""
    from matplotlib.image import imread

    for item in items:
        if isinstance(item, Table):
            logger.experiment.add_text(item.key, _markdown(item), step)
        elif isinstance(item, Audio):
            for number, (wave, text) in enumerate(zip(item.waves, item.captions)):
                logger.experiment.add_audio(f"{item.key}/{number}", wave[None].float(), step, item.sample_rate)
                logger.experiment.add_text(f"{item.key}/{number}", text, step)
        else:
            logger.experiment.add_image(item.key, imread(files[item.key]), step, dataformats="HWC")
    logger.experiment.flush()


def _show_in_mlflow(logger: MLFlowLogger, items: list, files: dict[str, Path], step: int) -> None:
    """The files as the run's artifacts, under their keys' folders (`test/predictions.png`)."""
    for item in items:
        if files[item.key].is_dir():  # sound clips
            logger.experiment.log_artifacts(logger.run_id, str(files[item.key]), item.key)
        else:
            logger.experiment.log_artifact(logger.run_id, str(files[item.key]), str(Path(item.key).parent))


SHOWN_BY: dict[type[Logger], Callable[..., None]] = {
    WandbLogger: _show_in_wandb,
    TensorBoardLogger: _show_in_tensorboard,
    MLFlowLogger: _show_in_mlflow,
}


def _markdown(table: Table) -> str:
    escape = lambda text: " ".join(str(text).splitlines()).replace("|", "\\|")  # noqa: E731 - one line per row
    lines = [table.columns, ["---"] * len(table.columns), *table.rows]
    return "\n".join("| " + " | ".join(escape(cell) for cell in line) + " |" for line in lines)


def _unit_range(image: torch.Tensor) -> torch.Tensor:
    """An image rescaled to [0, 1] for display (the data is normalised per channel)."""
    low, high = image.min(), image.max()
    return (image - low) / (high - low).clamp_min(1e-8)
