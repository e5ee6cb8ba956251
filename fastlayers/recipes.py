"""The speed run's recipes: a named model, optimizer, schedule, batch size, epoch budget,
augmentation and target accuracy (``fastlayers-mnist --recipe NAME``, ``--list-recipes``).

A recipe is judged by its time to target: the training time (the steps, augmentation included;
not compilation, data loading or evaluation) up to the end of the first epoch whose test
accuracy reaches the target. Accuracy is checked after every epoch, and the run stops there.
Every field is only a default: the usual flags override it. The figures each recipe reaches, over
three seeds and against PyTorch on the same recipe, are in docs/benchmarks.md.
"""
import dataclasses


def augmentation_parts(crop_padding, hflip):
    """The training augmentation that these option values ask for, one phrase a transform (the
    speed run's summary and ``--list-recipes`` both print it)."""
    return ([f"random 28x28 crop of the image zero-padded by {crop_padding}"] if crop_padding
            else []) + (["random horizontal flip"] if hflip else [])


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe; the fields are the speed run's options of the same names."""
    name: str
    summary: str
    dataset: str
    model: str
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    target_accuracy: float
    lr_schedule: str = "none"
    weight_decay: float = None
    label_smoothing: float = 0.0
    crop_padding: int = 0
    hflip: bool = False
    tta_flip: bool = False

    def options(self):
        """The fields that are speed-run options, by option name (``args`` attributes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("name", "summary")}

    def describe(self):
        """One paragraph: name, target, and the settings."""
        parts = [f"{self.model} on {self.dataset}", f"{self.optimizer} lr {self.lr:g}"
                 + ("" if self.weight_decay is None else f" wd {self.weight_decay:g}")
                 + ("" if self.lr_schedule == "none" else f" {self.lr_schedule}"),
                 f"batch {self.batch_size}", f"at most {self.epochs} epochs"]
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        augment = augmentation_parts(self.crop_padding, self.hflip)
        if augment:
            parts.append(" + ".join(augment))
        if self.tta_flip:
            parts.append("test-time flip averaging")
        return (f"{self.name:<12} target {self.target_accuracy:.1%}: {self.summary}\n"
                f"{'':<12} {', '.join(parts)}")


RECIPES = {r.name: r for r in [
    Recipe("fashion-93", "Fashion-MNIST to the benchmark table's best convolutional row (2 Conv + "
           "pooling + BatchNorm, 93.4%) within 15 epochs",
           dataset="fashion-mnist", model="cnn-wide", optimizer="adamw", lr=2e-3,
           weight_decay=5e-4, lr_schedule="onecycle", batch_size=128, epochs=15,
           target_accuracy=0.934, label_smoothing=0.1, hflip=True, tta_flip=True),
    Recipe("fashion-90", "Fashion-MNIST to 90% in the least training time",
           dataset="fashion-mnist", model="cnn", optimizer="adamw", lr=2e-3, weight_decay=5e-4,
           lr_schedule="onecycle", batch_size=128, epochs=4, target_accuracy=0.90),
    Recipe("mnist10k-98", "the embedded digits (8,334 training / 1,666 test images) to 98%",
           dataset="mnist-10k", model="cnn", optimizer="adamw", lr=4e-3, weight_decay=5e-4,
           lr_schedule="onecycle", batch_size=128, epochs=12, target_accuracy=0.98,
           label_smoothing=0.1, crop_padding=2),
    Recipe("mlp-88", "an MLP to the benchmark table's MLP row (256-128-100: 88.3%) on "
           "Fashion-MNIST in the least training time",
           dataset="fashion-mnist", model="mlp-wide", optimizer="adamw", lr=2e-3,
           weight_decay=5e-4, lr_schedule="onecycle", batch_size=128, epochs=8,
           target_accuracy=0.883, label_smoothing=0.1),
]}


def get(name):
    """The recipe called ``name``."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


def listing():
    """Every recipe's description, for ``--list-recipes``."""
    return "\n".join(r.describe() for r in RECIPES.values())
